"""`digits verify` and the service's startup check against golden vectors and metadata."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper

from digits.golden import Golden, golden_path, read_golden, write_golden
from tests.conftest import write_linear_onnx
from tests.serving.conftest import running_server

DIGITS = Path(sys.executable).parent / "digits"


def with_golden(model: Path, version: str = "v1") -> Path:
    """Golden vectors for `model`: its own outputs on a few images and the two blank extremes."""
    rng = np.random.default_rng(3)
    pixels = np.concatenate(
        [rng.integers(0, 256, (6, 784)), np.zeros((1, 784)), np.full((1, 784), 255)]
    ).astype(np.float32)
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    logits, probabilities = session.run(["logits", "probabilities"], {"pixels": pixels})
    write_golden(golden_path(model), Golden(pixels, logits, probabilities, version))
    return model


def tamper(model: Path, **props: str) -> None:
    """Nudge one weight (or change metadata), keeping everything else of the file."""
    proto = onnx.load(model)
    if props:
        current = {p.key: p.value for p in proto.metadata_props}
        onnx.helper.set_model_props(proto, {**current, **props})
    else:
        W = proto.graph.initializer[0]
        array = numpy_helper.to_array(W).copy()
        array[400, 3] += 0.05  # one weight of one digit, from a pixel every image has
        W.CopyFrom(numpy_helper.from_array(array, W.name))
    onnx.save(proto, model)


def verify(model: Path) -> subprocess.CompletedProcess:
    return subprocess.run([DIGITS, "verify", str(model)], capture_output=True, text=True)


@pytest.fixture
def model(tmp_path: Path) -> Path:
    return with_golden(write_linear_onnx(tmp_path / "digits.onnx", version="v1"))


def test_verify_passes_a_model_with_its_own_golden_vectors(model: Path) -> None:
    result = verify(model)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"{model}: verified: 8 golden vectors agree")
    assert read_golden(golden_path(model)).model_version == "v1"


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({}, "outputs differ from the golden vectors"),
        ({"model_version": "v2"}, "model_version v2 differs from the golden vectors' v1"),
        ({"model_name": "other"}, "metadata model_name is 'other'"),
        ({"classes": "[0, 1]"}, "metadata classes"),
    ],
)
def test_verify_refuses_a_tampered_model_in_one_line(model: Path, change, words) -> None:
    tamper(model, **change)
    result = verify(model)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"Error: {model}: {result.stderr.split(': ', 2)[2].strip()}"
    ]
    assert words in result.stderr and "Traceback" not in result.stderr


def test_verify_refuses_a_model_without_golden_vectors_or_with_broken_ones(model: Path) -> None:
    golden = golden_path(model)
    golden.write_bytes(golden.read_bytes()[:100])
    assert "not an .npz archive, or truncated" in verify(model).stderr
    golden.unlink()
    result = verify(model)
    assert (
        result.returncode == 1
        and "no golden vectors beside it (digits.golden.npz)" in result.stderr
    )


@pytest.mark.e2e
def test_the_service_refuses_to_start_on_a_tampered_model(model: Path, tmp_path: Path) -> None:
    tamper(model)
    log = tmp_path / "serve.log"
    with pytest.raises(RuntimeError, match="did not start"):
        with running_server(model, log):
            pass
    assert f"digits service: refusing {model}: outputs differ from the golden vectors" in (
        log.read_text()
    )


@pytest.mark.e2e
def test_the_service_reports_whether_its_model_is_verified(model: Path, tmp_path: Path) -> None:
    import httpx

    with running_server(model, tmp_path / "serve.log") as url:
        assert httpx.get(f"{url}/info").json()["verified"] == "verified"
    golden_path(model).unlink()
    with running_server(model, tmp_path / "serve2.log") as url:
        assert httpx.get(f"{url}/info").json()["verified"] == "unverified"
