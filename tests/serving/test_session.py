"""serving.session: provider choice, metadata, predictions against a numpy oracle, bad models."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from serving.session import (
    CPU,
    ModelError,
    ProviderError,
    cuda_problem,
    host_threads,
    load_model,
)


def gemm_weights(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """The W and b initializers of the fixture's linear model."""
    init = {t.name: numpy_helper.to_array(t) for t in onnx.load(path).graph.initializer}
    return init["W"], init["b"]


def test_predict_matches_numpy_softmax(linear_onnx: Path) -> None:
    model = load_model(linear_onnx, provider="cpu")
    pixels = np.random.default_rng(0).uniform(0, 255, size=(7, 784)).astype(np.float32)
    logits, probs = model.predict(pixels)
    W, b = gemm_weights(linear_onnx)
    expected = pixels.astype(np.float64) @ W + b  # (7, 784) @ (784, 10) -> (7, 10)
    np.testing.assert_allclose(logits, expected, rtol=1e-4, atol=1e-4)
    e = np.exp(expected - expected.max(axis=1, keepdims=True))
    np.testing.assert_allclose(probs, e / e.sum(axis=1, keepdims=True), atol=1e-5)


def test_metadata_version_and_provider(linear_onnx: Path) -> None:
    model = load_model(linear_onnx, provider="cpu", threads=1)
    assert model.provider == CPU
    assert model.version == "test"
    assert json.loads(model.metadata["classes"]) == list(range(10))
    assert model.session.get_session_options().intra_op_num_threads == 1


def test_auto_reports_the_provider_it_got(
    linear_onnx: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="serving.session")
    model = load_model(linear_onnx)
    assert model.provider == model.session.get_providers()[0]
    assert f"on {model.provider}" in caplog.text
    if cuda_problem():  # CPU-only host: the fallback is logged as a warning, never silent
        assert model.provider == CPU
        assert any(r.levelno == logging.WARNING for r in caplog.records)


def test_cuda_refuses_when_unusable(linear_onnx: Path) -> None:
    problem = cuda_problem()
    if problem is None:
        pytest.skip("CUDA is usable on this host")
    with pytest.raises(ProviderError, match="CUDA provider requested but unusable"):
        load_model(linear_onnx, provider="cuda")


def test_cpu_only_host_prints_no_cuda_errors(
    linear_onnx: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    if cuda_problem() is None:
        pytest.skip("CUDA is usable on this host")
    load_model(linear_onnx)
    out, err = capfd.readouterr()
    assert "CUDA" not in out + err


def test_default_threads_follow_the_host(linear_onnx: Path) -> None:
    model = load_model(linear_onnx, provider="cpu")
    assert model.session.get_session_options().intra_op_num_threads == host_threads()


@pytest.mark.parametrize("content", [b"", b"not an onnx model"])
def test_bad_model_file(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "bad.onnx"
    path.write_bytes(content)
    with pytest.raises(ModelError, match="not a loadable ONNX model"):
        load_model(path, provider="cpu")


def test_missing_model_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="model not found"):
        load_model(tmp_path / "absent.onnx", provider="cpu")


def test_unknown_provider(linear_onnx: Path) -> None:
    with pytest.raises(ValueError, match="provider must be one of"):
        load_model(linear_onnx, provider="tpu")
