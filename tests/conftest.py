"""Shared fixtures: tiny MNIST-shaped data built in place (never the network), a tiny ONNX model."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path

from pipeline.portable import ENVIRONMENT

# Stages invoked in-process here run in portable mode (params base.portable defaults to on), as
# the `digits` command runs them: its kernel settings must be in place before numpy and torch load.
os.environ.update(ENVIRONMENT)

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from digits.idx import encode_idx  # noqa: E402

IDX_NAMES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "t10k": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def make_digits(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """n learnable 28×28 uint8 images: a fixed random stroke pattern per class plus noise."""
    prototypes = np.random.default_rng(1234).random((10, 28, 28)) > 0.8  # same for every split
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 10
    rng.shuffle(y)
    ink = prototypes[y] * rng.uniform(150, 255, size=(n, 1, 1))
    noise = rng.normal(0, 25, size=(n, 28, 28))
    x = np.clip(ink + noise, 0, 255).astype(np.uint8)
    return x, y.astype(np.uint8)


def flat_digits(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """make_digits as a prepared split holds them: uint8 pixels (n, 784), int64 labels."""
    x, y = make_digits(n, seed)
    return x.reshape(n, -1), y.astype(np.int64)


def write_mnist_idx(directory: Path, n_train: int = 1000, n_test: int = 300) -> dict[str, str]:
    """Write the four raw IDX files; return their SHA-256 table (for `digits fetch --checksums`)."""
    directory.mkdir(parents=True, exist_ok=True)
    checksums = {}
    for prefix, n, seed in (("train", n_train, 1), ("t10k", n_test, 2)):
        x, y = make_digits(n, seed)
        for name, array in zip(IDX_NAMES[prefix], (x, y), strict=True):
            data = encode_idx(array)
            (directory / name).write_bytes(data)
            checksums[name] = hashlib.sha256(data).hexdigest()
    return checksums


@pytest.fixture(scope="session", autouse=True)
def run_logs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Stage run logs (timings, sources) go to a temp dir, never into the checkout."""
    logs = tmp_path_factory.mktemp("logs")
    os.environ["DIGITS_LOGS"] = str(logs)
    return logs


@pytest.fixture
def mnist_dir(tmp_path: Path) -> Path:
    """A directory with tiny train (1000) and test (300) IDX files."""
    directory = tmp_path / "mnist"
    write_mnist_idx(directory)
    return directory


@pytest.fixture
def checksums_file(mnist_dir: Path, tmp_path: Path) -> Path:
    """The SHA-256 table of `mnist_dir`, as `digits fetch --checksums` reads it."""
    table = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in mnist_dir.iterdir()}
    path = tmp_path / "checksums.json"
    path.write_text(json.dumps(table))
    return path


def write_linear_onnx(
    path: Path,
    seed: int = 0,
    version: str = "test",
    metadata: dict[str, str] | None = None,
    answer: int | None = None,
) -> Path:
    """A linear softmax classifier with the digits.onnx contract (pixels -> logits, probs).

    Random weights, or with `answer` zero weights and a bias that answers that digit always.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    W = (rng.normal(0, 0.01, size=(784, 10))).astype(np.float32)
    b = np.zeros(10, np.float32)
    if answer is not None:
        W[:] = 0
        b[answer] = 5.0
    graph = helper.make_graph(
        [
            helper.make_node("Gemm", ["pixels", "W", "b"], ["logits"]),
            helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
        ],
        "digits-test",
        [helper.make_tensor_value_info("pixels", TensorProto.FLOAT, ["N", 784])],
        [
            helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10]),
            helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", 10]),
        ],
        initializer=[numpy_helper.from_array(W, "W"), numpy_helper.from_array(b, "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    helper.set_model_props(
        model,
        {
            "model_name": "digits",
            "model_version": version,
            "classes": json.dumps(list(range(10))),
            **(metadata or {}),
        },
    )
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, path)
    return path


@pytest.fixture
def linear_onnx(tmp_path: Path) -> Path:
    """A tiny ONNX model with the digits.onnx input/output contract."""
    return write_linear_onnx(tmp_path / "linear.onnx")


def assert_one_line_error(result, *words: str, code: int = 1) -> None:
    """A CLI failure as one readable `Error:` line naming `words`, no traceback, exit `code`."""
    assert result.exit_code == code, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    lines = result.output.strip().splitlines()
    errors = [line for line in lines if line.startswith("Error:")]
    assert len(errors) == 1, result.output
    if code == 1:  # a ClickException prints nothing else; usage errors (2) add click's hint
        assert lines == errors, result.output
    for word in words:
        assert word in errors[0], errors[0]


def run(cmd: list[str], cwd: Path, env: dict[str, str], check: bool = True) -> str:
    """Run a command, failing the test with its output when it exits non-zero (with check)."""
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    if check:
        assert result.returncode == 0, f"{' '.join(cmd)} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout + result.stderr


def commit(repo: Path, env: dict[str, str], message: str) -> None:
    """Commit everything git does not ignore."""
    run(["git", "add", "-A"], repo, env)
    git_id = ["-c", "user.name=test", "-c", "user.email=test@example.com"]
    run(["git", *git_id, "commit", "-qm", message], repo, env)


def offline_mnist_env(
    tmp_path_factory: pytest.TempPathFactory, n_train: int = 1000, n_test: int = 300
) -> dict[str, str]:
    """os.environ plus what makes `digits fetch` read tiny IDX files offline, for DVC repos."""
    mnist = tmp_path_factory.mktemp("mnist")
    checksums = write_mnist_idx(mnist, n_train=n_train, n_test=n_test)
    (mnist.parent / "checksums.json").write_text(json.dumps(checksums))
    return {
        **os.environ,
        "DIGITS_MNIST_DIR": str(mnist),
        "DIGITS_MNIST_CHECKSUMS": str(mnist.parent / "checksums.json"),
        "DIGITS_OFFLINE": "1",
        "DIGITS_CACHE": str(tmp_path_factory.mktemp("cache")),
        "DVC_NO_ANALYTICS": "1",
    }
