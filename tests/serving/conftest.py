"""Serving fixtures: a really started `digits serve`, and `digits score` run in-process.

The server runs on a free port and is waited for via /readyz; the scorer's tests share how they
run the command, read its CSV back and check it against a numpy oracle of the fixture model.
"""

from __future__ import annotations

import csv
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import numpy_helper

from digits.cli import cli
from digits.idx import encode_idx
from tests.conftest import make_digits


def free_port() -> int:
    """A TCP port nobody listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def running_server(model: Path, log: Path, **settings: int | str) -> Iterator[str]:
    """`digits serve` on `model` (DIGITS_<KEY> env for each setting); yields its base URL."""
    with server_process(model, log, **settings) as (url, _):
        yield url


@contextmanager
def server_process(
    model: Path, log: Path, **settings: int | str
) -> Iterator[tuple[str, subprocess.Popen]]:
    """`digits serve` on `model`; yields its base URL and process (which a test may signal)."""
    port = free_port()
    env = {**os.environ, **{f"DIGITS_{k.upper()}": str(v) for k, v in settings.items()}}
    # BentoML empties $BENTOML_HOME/prometheus_multiproc_dir whenever a server starts: with one
    # home, a server started by a concurrent test run wipes this one's metrics.
    env["BENTOML_HOME"] = str(log.parent / f"bentoml-home-{port}")
    command = ["digits", "serve", "--model", str(model), "--port", str(port), "--host", "127.0.0.1"]
    with log.open("wb") as out:
        proc = subprocess.Popen([*command, "--provider", "cpu"], env=env, stdout=out, stderr=out)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while not ready(url):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"server did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.2)
        yield url, proc
    finally:
        if proc.poll() is None:
            proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def ready(url: str) -> bool:
    """Whether BentoML's readiness probe answers 200."""
    try:
        return httpx.get(f"{url}/readyz", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


@pytest.fixture
def idx_pair(tmp_path: Path) -> tuple[Path, np.ndarray, np.ndarray]:
    """50 test images as raw IDX, with the labels file beside them."""
    x, y = make_digits(50, seed=3)
    images = tmp_path / "t10k-images-idx3-ubyte"
    images.write_bytes(encode_idx(x))
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(encode_idx(y))
    return images, x, y


def oracle(model: Path, pixels: np.ndarray) -> np.ndarray:
    """Softmax probabilities of the fixture's linear model, in float64 numpy."""
    init = {t.name: numpy_helper.to_array(t) for t in onnx.load(model).graph.initializer}
    logits = pixels.reshape(len(pixels), 784).astype(np.float64) @ init["W"] + init["b"]
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def run(*args: object) -> object:
    """Invoke `digits score ... --provider cpu` in-process."""
    return CliRunner().invoke(cli, ["score", *map(str, args), "--provider", "cpu"])


def read_csv_rows(path: Path) -> list[dict[str, str]]:
    """The output CSV as dicts."""
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def assert_answers(
    answer: dict, expected: np.ndarray, version: str, threshold: float = 0.5
) -> None:
    """The whole JSON answer of a prediction route for images that each hold a digit.

    One entry per image in every list; probability rows of 10 that sum to 1 and match the
    oracle's `expected`; each digit their argmax; no reasons; low confidence exactly where the
    top probability is under the threshold; the model's version.
    """
    n = len(expected)
    assert set(answer) == {"digits", "probabilities", "reasons", "low_confidence", "model_version"}
    probabilities = np.asarray(answer["probabilities"], dtype=np.float64)
    assert probabilities.shape == (n, 10)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(probabilities, expected, atol=1e-6)
    assert answer["digits"] == probabilities.argmax(axis=1).tolist()
    assert answer["reasons"] == [None] * n
    assert answer["low_confidence"] == (probabilities.max(axis=1) < threshold).tolist()
    assert answer["model_version"] == version
