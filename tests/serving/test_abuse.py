"""Abusive requests against a started server: a JSON 4xx in our words, cheap, one log line."""

from __future__ import annotations

import io
import re
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from digits.images import load_image, to_mnist
from tests.conftest import write_linear_onnx
from tests.serving.conftest import assert_answers, oracle, running_server

pytestmark = pytest.mark.e2e

LEAKS = ("pydantic", "validation error", "Traceback", "Exception", "type=", "errors.pydantic.dev")


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_linear_onnx(tmp_path_factory.mktemp("model") / "digits.onnx", seed=3, version="v7")


@pytest.fixture(scope="module")
def server(model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """A server with the default limits (1,024 images, 4096×4096 pixels); its URL and log."""
    log = tmp_path_factory.mktemp("server") / "server.log"
    with running_server(model, log) as url:
        yield url, log


def encode(image: Image.Image) -> bytes:
    """PNG bytes of a Pillow image."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


DIGIT = encode(Image.fromarray(np.pad(np.full((20, 4), 255, np.uint8), ((4, 4), (12, 12)))))


def metric(url: str, name: str) -> float:
    """The value of one sample on /metrics (0 when absent)."""
    text = httpx.get(f"{url}/metrics").text
    found = re.search(rf"^{re.escape(name)} ([\d.e+-]+)$", text, re.M)
    return float(found.group(1)) if found else 0.0


def assert_refused(response: httpx.Response, status: int, words: str) -> None:
    """A JSON {"error": ...} with the status and words expected, and nothing of the libraries."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert list(body) == ["error"] and words in body["error"], body
    assert not any(leak in body["error"] for leak in LEAKS), body


def test_a_file_under_another_field_name(server: tuple[str, Path]) -> None:
    url, _ = server
    response = httpx.post(f"{url}/predict_image", files=[("file", ("x.png", DIGIT, "image/png"))])
    assert_refused(response, 400, "unexpected field 'file'")
    assert "'images'" in response.json()["error"]


def test_1100_images_over_the_default_limit(server: tuple[str, Path]) -> None:
    url, _ = server
    files = [("images", ("x.png", DIGIT, "image/png"))] * 1100
    assert_refused(httpx.post(f"{url}/predict_image", files=files), 413, "too many images")


def test_1024_images_at_the_default_limit_are_each_answered_in_full(
    server: tuple[str, Path], model: Path
) -> None:
    url, _ = server
    files = [("images", ("x.png", DIGIT, "image/png"))] * 1024
    response = httpx.post(f"{url}/predict_image", files=files, timeout=60)
    assert response.status_code == 200, response.text
    pixels = to_mnist(load_image(DIGIT)).reshape(1, 784)  # what the image route feeds the model
    expected = np.repeat(oracle(model, pixels), 1024, axis=0)  # (1024, 10): the same every time
    assert_answers(response.json(), expected, version="v7")


@pytest.mark.parametrize(
    ("body", "content_type", "status", "words"),
    [
        (b'--b\r\nContent-Disposition: form-data; name="images"\r\n\r\ntext\r\n--b--\r\n',
         "multipart/form-data; boundary=b", 400, "not an image"),
        (b"--b--\r\n", "multipart/form-data; boundary=b", 400, "empty batch"),
        (b"--b\r\nContent-Disposition: form-data; name=images\r\n\r\nxx",
         "multipart/form-data; boundary=b", 400, "malformed multipart"),
        (b"abc", "multipart/form-data", 400, "boundary"),
        (b"abc", "text/plain", 415, "multipart/form-data"),
        (DIGIT, "image/png", 415, "multipart/form-data"),
    ],
)  # fmt: skip
def test_malformed_forms(
    server: tuple[str, Path], body: bytes, content_type: str, status: int, words: str
) -> None:
    url, _ = server
    response = httpx.post(
        f"{url}/predict_image", content=body, headers={"content-type": content_type}
    )
    assert_refused(response, status, words)


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (b'{"pixels": null}', "numbers"),
        (b'{"pixels": [[0, true' + b", 0" * 782 + b"]]}", "numbers"),
        (b"[[0]]", '"pixels" field'),
        (b"", "empty body"),
        (b'{"pixels": {"a": 1}}', "numbers"),
    ],
)
def test_pixels_that_numpy_would_have_taken_or_choked_on(
    server: tuple[str, Path], body: bytes, words: str
) -> None:
    url, _ = server
    headers = {"content-type": "application/json"}
    assert_refused(httpx.post(f"{url}/predict", content=body, headers=headers), 400, words)


def test_json_without_its_content_type(server: tuple[str, Path]) -> None:
    url, _ = server
    response = httpx.post(f"{url}/predict", content=b'{"pixels": [[0]]}')
    assert_refused(response, 415, "application/json")


def test_huge_images_are_refused_from_their_headers(server: tuple[str, Path]) -> None:
    url, _ = server
    huge = encode(Image.new("L", (4096, 4096)))  # 16 KB of PNG, 16 Mpixels decoded
    decoded = metric(url, "digits_image_decode_seconds_count")
    start = time.monotonic()
    response = httpx.post(
        f"{url}/predict_image", files=[("images", ("x.png", huge, "image/png"))] * 60
    )
    assert time.monotonic() - start < 2  # decoding them all took ~0.3 s and 120 MiB each
    assert_refused(response, 413, "pixels in all")
    assert metric(url, "digits_image_decode_seconds_count") == decoded  # none was decoded
    too_big = encode(Image.new("L", (4097, 4096)))
    response = httpx.post(
        f"{url}/predict_image", files=[("images", ("x.png", too_big, "image/png"))]
    )
    assert_refused(response, 400, "image 0: image too large")


def test_refusals_are_one_log_line_each(server: tuple[str, Path]) -> None:
    url, log = server
    httpx.post(f"{url}/predict", json={"pixels": [[300] * 784]})
    httpx.post(f"{url}/predict_image", files=[("file", ("x.png", DIGIT, "image/png"))])
    time.sleep(0.5)  # the worker's log lines reach the file through BentoML's arbiter
    text = log.read_text()
    assert re.search(r"WARNING.*refused /predict 400: row 0 has pixel value 300", text)
    assert re.search(r"WARNING.*refused /predict_image 400: unexpected field 'file'", text)
    assert "Traceback" not in text and "[ERROR]" not in text


@pytest.fixture(scope="module")
def slow_server(model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One decoding thread and room for 40 large images per request."""
    log = tmp_path_factory.mktemp("slow") / "server.log"
    with running_server(model, log, decode_threads=1, max_request_pixels=40 * 2000 * 2000) as url:
        yield url


def test_decoding_stops_when_the_client_goes_away(slow_server: str) -> None:
    url = slow_server
    stripes = np.tile(np.arange(2000, dtype=np.uint8)[:, None], (1, 2000))  # compresses well
    image = encode(Image.fromarray(stripes))
    name = "digits_image_decode_seconds_count"
    start = metric(url, name)
    files = [("images", ("x.png", image, "image/png"))] * 40
    request = httpx.Request("POST", f"{url}/predict_image", files=files)
    head = "POST /predict_image HTTP/1.1\r\nHost: x\r\n" + "".join(
        f"{key}: {value}\r\n" for key, value in request.headers.items() if key.lower() != "host"
    )
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=60) as client:
        client.sendall(head.encode() + b"\r\n" + request.read())
        # The client leaves once decoding has begun, however fast or slow this machine is.
        deadline = time.monotonic() + 60
        while metric(url, name) == start and time.monotonic() < deadline:
            time.sleep(0.02)
    time.sleep(2.0)
    decoded = metric(url, name) - start
    time.sleep(2.0)
    # Stopped: at most the one decode in flight on the single thread finishes afterwards, and
    # never all 40.
    assert metric(url, name) - start <= decoded + 1
    assert 0 < decoded < 40, decoded
    assert httpx.post(f"{url}/predict", json={"pixels": [[0] * 784]}).status_code == 200
