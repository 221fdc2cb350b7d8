"""serving/service as plain Python: settings, input checks, the batcher, the service class."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import bentoml
import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image
from starlette.requests import Request

from digits.images import load_image, to_mnist
from serving.service import bento
from serving.service.batcher import Batcher
from serving.service.bento import Digits
from serving.service.bodies import InputError, to_pixels
from serving.service.serve import serve
from serving.service.settings import Settings
from serving.session import OnnxModel, cuda_problem, load_model
from tests.conftest import assert_one_line_error


def test_settings_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DIGITS_MAX_IMAGES", "8")
    monkeypatch.setenv("DIGITS_PROVIDER", "cpu")
    monkeypatch.delenv("DIGITS_MAX_BODY_BYTES", raising=False)
    settings = Settings.from_env()
    assert (settings.max_images, settings.provider) == (8, "cpu")
    assert settings.max_body_bytes == 16 * 1024 * 1024
    assert (settings.threads, settings.access_log) == (1, False)


@pytest.mark.parametrize(("key", "value"), [("MAX_IMAGES", "many"), ("WORKERS", "0")])
def test_settings_refuse_bad_values(monkeypatch: pytest.MonkeyPatch, key: str, value: str) -> None:
    monkeypatch.setenv(f"DIGITS_{key}", value)
    with pytest.raises(ValueError, match=f"DIGITS_{key}"):
        Settings.from_env()


def test_to_pixels_flattens_28x28() -> None:
    images = np.arange(2 * 28 * 28).reshape(2, 28, 28) % 256
    X = to_pixels(images.tolist(), max_images=2)
    assert X.dtype == np.float32
    np.testing.assert_array_equal(X, images.reshape(2, 784))


@pytest.mark.parametrize(
    ("value", "status", "words"),
    [
        ([[0] * 784] * 3, 413, "too many images"),
        ([], 400, "empty batch"),
        ([[0] * 784, [0]], 400, "rectangular"),
        ([[float("nan")] * 784], 400, "finite"),
        ([[300] * 784], 400, "0–255"),
        (7, 400, "shape"),
    ],
)
def test_to_pixels_refuses(value: Any, status: int, words: str) -> None:
    with pytest.raises(InputError, match=words) as caught:
        to_pixels(value, max_images=2)
    assert caught.value.status == status


class CountingModel(OnnxModel):
    """The real model, recording how many rows each call got."""

    calls: list[int]

    def predict(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self.calls.append(len(pixels))
        return super().predict(pixels)


def test_batcher_merges_concurrent_requests(linear_onnx: Path) -> None:
    model = CountingModel(**vars(load_model(linear_onnx, provider="cpu")))
    model.calls = []
    batcher = Batcher(model, max_batch=16)
    sizes = [1, 3, 1, 5, 2, 1, 7, 4] * 4
    rng = np.random.default_rng(0)
    inputs = [rng.uniform(0, 255, size=(n, 784)).astype(np.float32) for n in sizes]

    async def run_all() -> list[np.ndarray]:
        return await asyncio.gather(*(batcher(X) for X in inputs))

    outputs = asyncio.run(run_all())
    for X, P in zip(inputs, outputs, strict=True):
        np.testing.assert_allclose(P, model.predict(X)[1], atol=1e-6)
    batched = model.calls[: -len(inputs)]  # the direct predict calls above came last
    assert sum(batched) == sum(sizes)
    assert len(batched) < len(inputs) and max(batched) <= 16


def test_a_lone_request_runs_the_model_once_on_its_own_rows(linear_onnx: Path) -> None:
    model = CountingModel(**vars(load_model(linear_onnx, provider="cpu")))
    model.calls = []
    X = np.random.default_rng(1).uniform(0, 255, size=(3, 784)).astype(np.float32)
    P = asyncio.run(Batcher(model, max_batch=16)(X))
    assert model.calls == [3]
    np.testing.assert_allclose(P, model.predict(X)[1], atol=1e-6)


def test_a_cancelled_leader_leaves_no_request_waiting(linear_onnx: Path) -> None:
    model = load_model(linear_onnx, provider="cpu")
    batcher = Batcher(model, max_batch=16)
    first, second = np.random.default_rng(2).uniform(0, 255, size=(2, 1, 784)).astype(np.float32)

    async def cancel_the_leader() -> np.ndarray:
        leader = asyncio.ensure_future(batcher(first))
        follower = asyncio.ensure_future(batcher(second))
        await asyncio.sleep(0)  # the leader waits for the batch to form; the follower joined it
        leader.cancel()
        with pytest.raises(asyncio.CancelledError):
            await leader
        return await asyncio.wait_for(follower, timeout=30)

    np.testing.assert_allclose(
        asyncio.run(cancel_the_leader()), model.predict(second)[1], atol=1e-6
    )
    assert not batcher.pending and not batcher.leading


@pytest.fixture
def service(linear_onnx: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """The service class called in Python, on the settings it read at import but this model."""
    settings = dataclasses.replace(bento.SETTINGS, model=str(linear_onnx), provider="cpu")
    monkeypatch.setattr(bento, "SETTINGS", settings)
    instance = Digits()
    yield instance
    instance.stop_decoding()


@pytest.fixture
def ctx() -> Iterator[bentoml.Context]:
    """A service context inside a request, as the server gives each API call."""
    context = bentoml.Context()
    with context.in_request(Request({"type": "http", "method": "POST", "headers": []})):
        yield context


def test_service_class_predict(service: Any, ctx: bentoml.Context) -> None:
    pixels = np.random.default_rng(0).integers(0, 256, (2, 784)).astype(np.float32)
    answer = asyncio.run(service.predict(pixels.tolist(), ctx))
    expected = service.routes.model.predict(pixels)[1]
    np.testing.assert_allclose(answer["probabilities"], expected, atol=1e-6)
    assert answer["digits"] == expected.argmax(axis=1).tolist()
    assert answer["reasons"] == [None, None]
    assert answer["low_confidence"] == (expected.max(axis=1) < 0.5).tolist()
    assert answer["model_version"] == "test"


def test_service_class_answers_blank_pixel_rows_with_no_digit(
    service: Any, ctx: bentoml.Context
) -> None:
    pixels = np.random.default_rng(1).integers(0, 256, (3, 784)).astype(np.float32)
    pixels[1] = 128  # one colour: no digit
    answer = asyncio.run(service.predict(pixels.tolist(), ctx))
    expected = service.routes.model.predict(pixels)[1]
    assert answer["digits"][1] is None and answer["probabilities"][1] is None
    assert answer["reasons"][1].startswith("blank")
    assert answer["low_confidence"][1] is False
    assert [answer["digits"][i] for i in (0, 2)] == expected[[0, 2]].argmax(axis=1).tolist()
    assert answer["reasons"][0] is None and answer["reasons"][2] is None


def test_service_class_refusal_sets_status(service: Any, ctx: bentoml.Context) -> None:
    answer = asyncio.run(service.predict([[1, 2, 3]], ctx))
    assert ctx.response.status_code == 400
    assert "shape" in answer["error"]


def test_service_class_predict_image(service: Any, ctx: bentoml.Context, tmp_path: Path) -> None:
    path = tmp_path / "digit.png"
    image = np.zeros((40, 40), np.uint8)
    image[5:35, 18:22] = 255
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    path.write_bytes(buffer.getvalue())
    answer = asyncio.run(service.predict_image([path, path], ctx))
    X = to_mnist(load_image(path.read_bytes())).reshape(1, 784).astype(np.float32)
    expected = service.routes.model.predict(X)[1]
    np.testing.assert_allclose(answer["probabilities"], np.repeat(expected, 2, axis=0), atol=1e-6)


def test_service_class_info(service: Any) -> None:
    info = service.info()
    assert info["provider"] == "CPUExecutionProvider"
    assert info["model_name"] == "digits"


def test_serving_never_imports_torch_or_pipeline() -> None:
    code = (
        "import sys, serving.service.bento, serving.service.serve, serving.session\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'pipeline')))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_serve_refuses_a_missing_model(tmp_path: Path) -> None:
    result = CliRunner().invoke(serve, ["--model", str(tmp_path / "absent.onnx")])
    assert result.exit_code == 2
    assert "no such file" in result.output


def test_serve_refuses_cuda_without_it(linear_onnx: Path) -> None:
    if cuda_problem() is None:
        pytest.skip("CUDA is usable on this host")
    result = CliRunner().invoke(serve, ["--model", str(linear_onnx), "--provider", "cuda"])
    assert result.exit_code == 1
    assert "CUDA is unusable here" in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    ("key", "value", "words"),
    [
        ("PROVIDER", "gpu", "one of auto, cuda, cpu"),
        ("ACCESS_LOG", "maybe", "1 or 0"),
        ("THREADS", "-1", "a whole number"),
        ("MAX_BODY_BYTES", "0", "at least 1"),
        ("MAX_IMAGE_PIXELS", "0", "at least 1"),
        ("MAX_REQUEST_PIXELS", "lots", "a whole number"),
        ("DECODE_THREADS", "0", "at least 1"),
        ("MAX_QUEUE", "0", "at least 1"),
        ("TIMEOUT_S", "0", "at least 1"),
        ("JSON_LOGS", "json", "1 or 0"),
    ],
)
def test_settings_name_every_bad_value(key: str, value: str, words: str) -> None:
    with pytest.raises(ValueError, match=f"DIGITS_{key} must be {words}"):
        Settings.from_env({f"DIGITS_{key}": value})


@pytest.mark.parametrize(
    ("key", "value", "code"),
    [
        ("MAX_IMAGES", "0", 1),
        ("THREADS", "abc", 1),
        ("ACCESS_LOG", "maybe", 1),
        ("WORKERS", "abc", 2),
        ("WORKERS", "0", 2),
        ("PROVIDER", "gpu", 2),
    ],
)
def test_serve_refuses_a_bad_env_value_in_one_line_before_starting(
    linear_onnx: Path, key: str, value: str, code: int
) -> None:
    env = {f"DIGITS_{key}": value}
    result = CliRunner().invoke(serve, ["--model", str(linear_onnx)], env=env)
    assert_one_line_error(result, f"DIGITS_{key}", code=code)


def test_bentoml_serve_with_a_bad_env_value_exits_with_one_line(linear_onnx: Path) -> None:
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "DIGITS_MODEL": str(linear_onnx), "DIGITS_MAX_IMAGES": "0"}
    env["BENTOML_HOME"] = str(linear_onnx.parent / "bentoml-home")  # keeps others' metrics
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(root), env.get("PYTHONPATH")]))
    command = [
        sys.executable,
        "-m",
        "bentoml",
        "serve",
        "serving.service.bento:Digits",
        "--port",
        "1",
    ]
    result = subprocess.run(command, env=env, cwd=root, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    output = (result.stdout + result.stderr).strip()
    assert output == "digits service: DIGITS_MAX_IMAGES must be at least 1"


def test_importing_the_service_declares_it_and_does_no_work(tmp_path: Path) -> None:
    code = (
        "import gc, threading, serving.service.bento as b\n"
        "print(gc.get_freeze_count(), sorted(t.name for t in threading.enumerate()))\n"
        "print([cls.__name__ for cls, _ in b.Digits.middlewares])"
    )
    env = {**os.environ, "DIGITS_MODEL": str(tmp_path / "absent.onnx")}  # nothing loads it
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    frozen_and_threads, layers = result.stdout.splitlines()
    assert frozen_and_threads == "0 ['MainThread']"  # no pool, no gc.freeze: that is __init__'s
    layers_in_order = ["OpenAPIDocument", "RequestMetrics", "Admission", "BodyLimit", "FastRoutes"]
    assert layers == str(layers_in_order)


def test_the_service_uses_bentoml_by_its_public_api_only() -> None:
    root = Path(__file__).resolve().parents[2] / "serving"
    for path in root.rglob("*.py"):
        text = path.read_text()
        assert "__class__" not in text, path
        assert "_bentoml" not in text and "bentoml._internal" not in text, path  # private parts
