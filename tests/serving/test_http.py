"""The running server over HTTP: answers match ONNX Runtime, every bad request gets a JSON 4xx."""

from __future__ import annotations

import asyncio
import io
import re
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path

import bentoml
import httpx
import numpy as np
import onnxruntime as ort
import pytest
from PIL import Image, ImageDraw

from digits.images import load_image, to_mnist
from tests.conftest import make_digits, write_linear_onnx
from tests.serving.conftest import assert_answers, running_server

pytestmark = pytest.mark.e2e

MAX_IMAGES, MAX_BODY = 64, 1 << 20  # small limits, so over-limit requests stay cheap


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_linear_onnx(tmp_path_factory.mktemp("model") / "digits.onnx", seed=3, version="v7")


@pytest.fixture(scope="module")
def url(model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    log = tmp_path_factory.mktemp("server") / "server.log"
    with running_server(model, log, max_images=MAX_IMAGES, max_body_bytes=MAX_BODY) as base:
        yield base


def oracle(model: Path, pixels: np.ndarray) -> np.ndarray:
    """Probabilities from a separate ONNX Runtime session on the same file."""
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    return session.run(["probabilities"], {"pixels": pixels.reshape(len(pixels), 784)})[0]


def png(array: np.ndarray, fmt: str = "PNG", **options: object) -> bytes:
    """PNG (or another format's) bytes of a uint8 grayscale image."""
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=fmt, **options)
    return buffer.getvalue()


def webp_declaring(data: bytes, width: int, height: int) -> bytes:
    """A lossless WebP whose header (VP8L: 14-bit sizes minus one) claims width×height."""
    bits = struct.unpack("<I", data[21:25])[0] & ~0xFFFFFFF
    return data[:21] + struct.pack("<I", bits | (width - 1) | (height - 1) << 14) + data[25:]


def bomb_png(side: int = 30000) -> bytes:
    """A tiny PNG whose header claims side×side pixels (a decompression bomb)."""
    data = png(np.zeros((8, 8), np.uint8))
    ihdr = struct.pack(">II", side, side) + data[24:29]
    return data[:16] + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr)) + data[33:]


def digits_images(n: int, seed: int) -> np.ndarray:
    """n random uint8 (28, 28) images."""
    return np.random.default_rng(seed).integers(0, 256, size=(n, 28, 28), dtype=np.uint8)


def test_predict_matches_onnxruntime(url: str, model: Path) -> None:
    pixels = digits_images(5, seed=1)
    response = httpx.post(f"{url}/predict", json={"pixels": pixels.reshape(5, 784).tolist()})
    assert response.status_code == 200, response.text
    assert_answers(response.json(), oracle(model, pixels.astype(np.float32)), version="v7")


def test_predict_accepts_28x28(url: str, model: Path) -> None:
    pixels = digits_images(2, seed=2)
    answer = httpx.post(f"{url}/predict", json={"pixels": pixels.tolist()}).json()
    expected = oracle(model, pixels.astype(np.float32))
    assert answer["digits"] == expected.argmax(axis=1).tolist()


def test_predict_image_matches_the_json_route(url: str, model: Path) -> None:
    one = np.zeros((28, 28), np.uint8)
    one[4:24, 12:16] = 255  # a centred "1"
    drawn, _ = make_digits(3, seed=8)  # stroke patterns that to_mnist crops, scales and centres
    images = [png(a) for a in (one, *drawn)]
    files = [("images", (f"{i}.png", data, "image/png")) for i, data in enumerate(images)]
    from_image = httpx.post(f"{url}/predict_image", files=files)
    assert from_image.status_code == 200, from_image.text
    # The oracle: the pixels the image route should have fed the model.
    pixels = np.stack([to_mnist(load_image(data)) for data in images])  # (4, 28, 28) uint8
    assert not (pixels == np.stack([one, *drawn])).all()  # so the test sees the conversion
    from_json = httpx.post(f"{url}/predict", json={"pixels": pixels.reshape(4, 784).tolist()})
    assert from_json.status_code == 200, from_json.text
    image_answer, json_answer = from_image.json(), from_json.json()
    assert image_answer["digits"] == json_answer["digits"]
    np.testing.assert_allclose(
        image_answer["probabilities"], json_answer["probabilities"], rtol=1e-6, atol=1e-7
    )
    expected = oracle(model, pixels.astype(np.float32))
    np.testing.assert_allclose(image_answer["probabilities"], expected, atol=1e-6)
    assert image_answer["digits"] == expected.argmax(axis=1).tolist()


def drawn(strokes: list[tuple[int, int]]) -> np.ndarray:
    """A thick dark stroke through the points on light paper, 120×160: uint8 (160, 120)."""
    image = Image.new("L", (120, 160), 255)
    ImageDraw.Draw(image).line(strokes, fill=0, width=12)
    return np.asarray(image)


def test_predict_image_reads_webp_like_png(url: str, model: Path) -> None:
    pictures = [drawn([(20, 30), (90, 30), (45, 140)]), drawn([(70, 20), (20, 100), (100, 100)])]
    files = []
    for i, picture in enumerate(pictures):
        for fmt, options in (("PNG", {}), ("WEBP", {"lossless": True}), ("WEBP", {"quality": 80})):
            data = png(picture, fmt, **options)
            files.append(("images", (f"{i}.{fmt.lower()}", data, f"image/{fmt.lower()}")))
    response = httpx.post(f"{url}/predict_image", files=files)
    assert response.status_code == 200, response.text
    answer = response.json()
    P = np.asarray(answer["probabilities"]).reshape(2, 3, 10)  # picture, then PNG/lossless/lossy
    pixels = np.stack([to_mnist(load_image(png(p))) for p in pictures])  # what PNG should feed
    expected = oracle(model, pixels.astype(np.float32))
    np.testing.assert_allclose(P[:, 0], expected, atol=1e-6)
    np.testing.assert_allclose(P[:, 1], expected, atol=1e-6)
    # Lossy WebP moves grey edges by a level or two (tests/digits): the same digits.
    assert answer["digits"] == np.repeat(expected.argmax(axis=1), 3).tolist()


def test_info_reports_provider_and_metadata(url: str) -> None:
    info = httpx.get(f"{url}/info").json()
    assert info["provider"] == "CPUExecutionProvider"
    assert info["model_version"] == "v7"
    assert info["model_name"] == "digits"


def probe_body(response: httpx.Response) -> None:
    """BentoML's readiness and liveness probes: plain text, nothing but a newline."""
    assert response.headers["content-type"].startswith("text/plain")
    assert response.text.strip() == ""


def prometheus_body(response: httpx.Response) -> None:
    """Prometheus text with our series, each digit's answer count among them from the start."""
    from prometheus_client.parser import text_string_to_metric_families

    assert response.headers["content-type"].startswith("text/plain; version=")
    families = {f.name: f for f in text_string_to_metric_families(response.text)}
    # Those with no labels or labels known in advance; the per-status counts appear with a status.
    ours = {
        "digits_predictions", "digits_confidence", "digits_image_decode_seconds",
        "digits_batch_size", "digits_low_confidence_answers", "digits_request_seconds",
    }  # fmt: skip
    assert ours <= set(families), ours - set(families)
    answered = {s.labels["digit"] for s in families["digits_predictions"].samples}
    assert {str(d) for d in range(10)} | {"none"} <= answered


def schema_body(response: httpx.Response) -> None:
    """BentoML's service schema: the digits service and both prediction routes."""
    schema = response.json()
    assert schema["name"] == "digits"
    assert {r["route"] for r in schema["routes"]} >= {"/predict", "/predict_image"}


def html_body(title: str, element: str):
    """An HTML page with this title holding this element."""

    def check(response: httpx.Response) -> None:
        assert response.headers["content-type"].startswith("text/html")
        assert re.search(rf"<title>{re.escape(title)}</title>", response.text), response.text[:300]
        assert element in response.text

    return check


ROUTES = {
    "/readyz": probe_body,
    "/livez": probe_body,
    "/metrics": prometheus_body,
    "/schema.json": schema_body,
    "/docs": html_body("digits — HTTP API", '<div id="swagger-ui">'),
    "/": html_body("digits", '<canvas id="pad"'),  # the drawing page
}


@pytest.mark.parametrize("path", ROUTES)
def test_each_get_route_answers_its_own_content(url: str, path: str) -> None:
    response = httpx.get(f"{url}{path}")
    assert response.status_code == 200, response.text
    ROUTES[path](response)


def test_docs_page_loads_swagger_ui_on_the_openapi_document(url: str) -> None:
    page = httpx.get(f"{url}/docs").text
    assets = re.findall(r'(?:src|href)="\./([^"]+)"', page)
    assert "static_content/swagger-ui-bundle.js" in assets
    for asset in assets:  # every asset the page names is really served
        assert httpx.get(f"{url}/{asset}").status_code == 200, asset
    initializer = httpx.get(f"{url}/static_content/swagger-initializer.js").text
    assert '"./docs.json"' in initializer
    assert "/predict" in httpx.get(f"{url}/docs.json").json()["paths"]


def test_bentoml_client(url: str, model: Path, tmp_path: Path) -> None:
    pixels = digits_images(3, seed=4)
    image = tmp_path / "digit.png"
    image.write_bytes(png(pixels[0]))
    with bentoml.SyncHTTPClient(url) as client:
        answer = client.predict(pixels=pixels.reshape(3, 784).tolist())
        from_image = client.predict_image(images=[image])
        client._temp_dir.cleanup()  # BentoML 1.4's close() leaves it to GC: a ResourceWarning
    expected = oracle(model, pixels.astype(np.float32))
    assert answer["digits"] == expected.argmax(axis=1).tolist()
    assert answer["model_version"] == from_image["model_version"] == "v7"
    assert len(from_image["probabilities"]) == 1


ROW = [0] * 784
BAD_JSON = {
    "wrong shape": ({"pixels": [[0] * 783]}, 400, "shape"),
    "wrong 2-d shape": ({"pixels": [[[0] * 27] * 28]}, 400, "shape"),
    "ragged rows": ({"pixels": [ROW, [0] * 10]}, 400, "rectangular"),
    "strings": ({"pixels": [["a"] * 784]}, 400, "numbers"),
    "nulls": ({"pixels": [[None] * 784]}, 400, "numbers"),
    "booleans": ({"pixels": [[True] * 784]}, 400, "numbers"),
    "not a list": ({"pixels": "zeros"}, 400, "numbers"),
    "missing field": ({"image": [ROW]}, 400, "pixels"),
    "above 255": ({"pixels": [[256] + ROW[1:]]}, 400, "0–255"),
    "negative": ({"pixels": [[-1] + ROW[1:]]}, 400, "0–255"),
    "empty batch": ({"pixels": []}, 400, "empty batch"),
    "over the limit": ({"pixels": [ROW] * (MAX_IMAGES + 1)}, 413, "too many images"),
}
BAD_BODIES = {
    "malformed JSON": (b'{"pixels": [[1, 2]', 400, "JSON"),
    "NaN": (b'{"pixels": [[NaN' + b", 0" * 783 + b"]]}", 400, "finite"),
    "infinity": (b'{"pixels": [[1e999' + b", 0" * 783 + b"]]}", 400, "finite"),
    "oversized body": (b" " * (MAX_BODY + 1), 413, "too large"),
}


def assert_refused(response: httpx.Response, status: int, words: str, url: str) -> None:
    """A JSON error with the status and words expected, and the server still answers."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert words.lower() in str(response.json()).lower()
    assert httpx.post(f"{url}/predict", json={"pixels": [ROW]}).status_code == 200


@pytest.mark.parametrize("case", BAD_JSON)
def test_bad_json_values(url: str, case: str) -> None:
    body, status, words = BAD_JSON[case]
    assert_refused(httpx.post(f"{url}/predict", json=body), status, words, url)


@pytest.mark.parametrize("case", BAD_BODIES)
def test_bad_bodies(url: str, case: str) -> None:
    body, status, words = BAD_BODIES[case]
    headers = {"content-type": "application/json"}
    assert_refused(httpx.post(f"{url}/predict", content=body, headers=headers), status, words, url)


def test_oversized_chunked_body(url: str) -> None:
    chunks = (b" " * (1 << 16) for _ in range(MAX_BODY // (1 << 16) + 2))  # no content-length
    headers = {"content-type": "application/json"}
    response = httpx.post(f"{url}/predict", content=chunks, headers=headers)
    assert_refused(response, 413, "too large", url)


WEBP = png(make_digits(1, seed=5)[0][0], "WEBP", lossless=True)
BAD_IMAGES = {
    "empty file": (b"", "image 0: empty upload"),
    "non-image bytes": (b"this is not an image", "not an image"),
    "truncated image": (png(digits_images(1, seed=5)[0])[:60], "truncated"),
    "decompression bomb": (bomb_png(), "too large"),
    "truncated WebP": (WEBP[: len(WEBP) // 2], "image 0: corrupt or truncated image ("),
    "WebP lying about its size": (webp_declaring(WEBP, 640, 480), "image 0: corrupt or truncated"),
    "WebP bomb header": (webp_declaring(WEBP, 16383, 16383)[:30], "image 0: image too large: "),
}


@pytest.mark.parametrize("case", BAD_IMAGES)
def test_bad_images(url: str, case: str) -> None:
    data, words = BAD_IMAGES[case]
    kind = "image/webp" if "WebP" in case else "image/png"
    response = httpx.post(f"{url}/predict_image", files=[("images", ("x", data, kind))])
    assert_refused(response, 400, words, url)


def test_too_many_images(url: str) -> None:
    files = [("images", ("x.png", png(digits_images(1, seed=6)[0]), "image/png"))]
    response = httpx.post(f"{url}/predict_image", files=files * (MAX_IMAGES + 1))
    assert_refused(response, 413, "too many images", url)


def test_200_concurrent_requests(url: str, model: Path) -> None:
    pixels = digits_images(200, seed=7)
    expected = oracle(model, pixels.astype(np.float32)).argmax(axis=1)

    async def send_all() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=200)
        async with httpx.AsyncClient(limits=limits, timeout=60) as client:
            requests = [
                client.post(f"{url}/predict", json={"pixels": [p.ravel().tolist()]}) for p in pixels
            ]
            return await asyncio.gather(*requests)

    responses = asyncio.run(send_all())
    assert [r.status_code for r in responses] == [200] * 200
    assert [r.json()["digits"][0] for r in responses] == expected.tolist()
