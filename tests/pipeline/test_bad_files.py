"""Corrupt checkpoints, corrupt prepared .npz files and a too-large lr-find batch: one-line errors.

Each command is run for real on tiny files; each failure must be one `Error:` line naming the file,
with no traceback and no output file left behind.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from click.testing import CliRunner

from digits.cli import cli
from pipeline.model.network import ModelParams, build_mlp, save_checkpoint
from pipeline.model.transform import AffineTransform
from tests.conftest import assert_one_line_error, flat_digits, write_linear_onnx

PARAMS = {
    "model": {"hidden": [16], "dropout": 0.0},
    "train": {"epochs": 1, "batch_size": 32, "augment": False},
}


@pytest.fixture(scope="module")
def good(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny workspace: splits, transform, checkpoint, ONNX model, params, recorded reports."""
    root = tmp_path_factory.mktemp("good")
    prepared = root / "prepared"
    prepared.mkdir()
    for name, n, seed in (("train", 100, 1), ("dev", 40, 2), ("test", 40, 3)):
        x, y = flat_digits(n, seed)
        np.savez(prepared / f"{name}.npz", x=x, y=y)
    matrix = np.random.default_rng(0).normal(0, 1 / 2800, size=(784, 8)).astype(np.float32)
    transform = AffineTransform(mean=np.zeros(784, np.float32), matrix=matrix)
    transform.save(prepared / "transform.npz")
    model = build_mlp(ModelParams(hidden=(16,), dropout=0.0), transform)
    save_checkpoint(root / "mlp.pt", model)
    (root / "params.yaml").write_text(yaml.safe_dump(PARAMS))
    (root / "evaluate.json").write_text(
        json.dumps(
            {"compressed": {"dev_accuracy": 0.5, "test_accuracy": 0.5, "confidence_threshold": 0.5}}
        )
    )
    (root / "compress.json").write_text(json.dumps({"sparsity": 0.5}))
    write_linear_onnx(root / "digits.onnx")
    return root


def break_checkpoint(kind: str, path: Path, good: Path) -> None:
    """Write a checkpoint that is wrong in the named way (or none at all)."""
    data = good.read_bytes()
    if kind == "text":
        path.write_bytes(b"not a checkpoint")
    elif kind == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "no keys":
        torch.save({"weights": torch.zeros(3)}, path)
    elif kind == "tensor":
        torch.save(torch.zeros(3), path)
    elif kind == "wrong weights":
        payload = torch.load(good, weights_only=True)
        payload["state_dict"].pop("head.bias")
        torch.save(payload, path)


CHECKPOINTS = {
    "text": "not a torch file",
    "truncated": "corrupt",
    "empty": "empty or truncated",
    "no keys": "no spec, state_dict entry",
    "tensor": "no spec, state_dict entry",
    "wrong weights": "head.bias",
}


def run(*args: object):
    """The digits command line, in process."""
    return CliRunner().invoke(cli, [str(a) for a in args])


def stage_args(command: str, good: Path, out: Path, prepared: Path, model: Path) -> list[object]:
    """Arguments that run `command` on `prepared` and `model`, writing only under `out`."""
    params = ["--params", good / "params.yaml"]
    if command == "compress":
        return ["compress", *params, "--data", prepared, "--model", model, "--out", out / "c.pt",
                "--metrics", out / "c.json", "--sweep", out / "s.json"]  # fmt: skip
    if command == "evaluate":
        return ["evaluate", *params, "--data", prepared, "--dense", good / "mlp.pt",
                "--compressed", model, "--out", out / "ev",
                "--metrics", out / "ev.json"]  # fmt: skip
    if command == "export":
        (out / "models").mkdir(parents=True, exist_ok=True)
        if model.exists():
            shutil.copy(model, out / "models" / "mlp-compressed.pt")
        return ["export", *params, "--models", out / "models", "--test", prepared / "test.npz",
                "--evaluate", good / "evaluate.json", "--compress", good / "compress.json",
                "--report", out / "export.json"]  # fmt: skip
    if command == "train":
        return ["train", *params, "--data", prepared, "--out", out / "m.pt",
                "--metrics", out / "t.json"]  # fmt: skip
    if command == "lr-find":
        return ["lr-find", *params, "--data", prepared, "--out", out / "lr.json"]
    if command == "learning-curve":
        return ["learning-curve", *params, "--data", prepared, "--out", out / "lc.json"]
    if command == "robustness":
        return ["robustness", *params, "--data", prepared, "--model", good / "digits.onnx",
                "--metrics", out / "r.json", "--examples", out / "r"]  # fmt: skip
    assert command == "report"
    return ["report", "--reports", good, "--data", prepared]


def written(out: Path) -> list[str]:
    """Files a failed command left under `out`, the checkpoint export reads from there aside."""
    files = {str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()}
    return sorted(files - {"models/mlp-compressed.pt"})


@pytest.mark.parametrize("command", ["compress", "evaluate", "export"])
@pytest.mark.parametrize("kind", list(CHECKPOINTS))
def test_bad_checkpoint_is_one_line_naming_the_file(
    good: Path, tmp_path: Path, command: str, kind: str
) -> None:
    bad = tmp_path / "bad.pt"
    break_checkpoint(kind, bad, good / "mlp.pt")
    out = tmp_path / "out"
    result = run(*stage_args(command, good, out, good / "prepared", bad))
    name = "mlp-compressed.pt" if command == "export" else str(bad)
    assert_one_line_error(result, name, "is not a digits checkpoint", CHECKPOINTS[kind])
    assert written(out) == []


def test_export_without_a_checkpoint_names_it(good: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = run(*stage_args("export", good, out, good / "prepared", tmp_path / "absent.pt"))
    assert_one_line_error(result, "mlp-compressed.pt: no such file")
    assert written(out) == []


def break_npz(kind: str, path: Path) -> None:
    """Spoil a prepared .npz in the named way."""
    data = path.read_bytes()
    if kind == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif kind == "not a zip":
        path.write_bytes(b"hello, not an archive")
    elif kind == "no y":
        np.savez(path, x=np.zeros((100, 784), np.uint8))
    elif kind == "bad shape":
        np.savez(path, x=np.zeros((100, 10), np.uint8), y=np.zeros(100, np.int64))


NPZ = {
    "truncated": "not an .npz archive, or truncated",
    "not a zip": "not an .npz archive",
    "no y": "no array y (holds x)",
    "bad shape": "x must be N×784",
}
# The split each command reads first.
READS = {"train": "train", "compress": "train", "evaluate": "train", "lr-find": "train",
         "learning-curve": "train", "export": "test", "report": "test",
         "robustness": "test"}  # fmt: skip


@pytest.mark.parametrize("command", list(READS))
@pytest.mark.parametrize("kind", list(NPZ))
def test_bad_prepared_npz_is_one_line_naming_the_file(
    good: Path, tmp_path: Path, command: str, kind: str
) -> None:
    prepared = tmp_path / "prepared"
    shutil.copytree(good / "prepared", prepared)
    bad = prepared / f"{READS[command]}.npz"
    break_npz(kind, bad)
    out = tmp_path / "out"
    out.mkdir()
    result = run(*stage_args(command, good, out, prepared, good / "mlp.pt"))
    assert_one_line_error(result, f"{bad}: {NPZ[kind]}")
    assert written(out) == []


def test_transform_without_its_matrix_is_one_line(good: Path, tmp_path: Path) -> None:
    prepared = tmp_path / "prepared"
    shutil.copytree(good / "prepared", prepared)
    np.savez(prepared / "transform.npz", mean=np.zeros(784, np.float32))
    out = tmp_path / "out"
    out.mkdir()
    result = run(*stage_args("train", good, out, prepared, good / "mlp.pt"))
    assert_one_line_error(result, f"{prepared / 'transform.npz'}: no array matrix")
    assert written(out) == []


def test_lr_find_batch_larger_than_the_data_is_one_line(good: Path, tmp_path: Path) -> None:
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({**PARAMS, "train": {"batch_size": 128}}))
    out = tmp_path / "lr.json"
    result = run("lr-find", "--params", params, "--data", good / "prepared", "--out", out)
    assert_one_line_error(result, "train.batch_size 128", "has 100 rows")
    assert list(tmp_path.iterdir()) == [params]
