"""The compress stage on tiny data: the recipe, the report, the checkpoint, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from click.testing import CliRunner

from digits.cli import cli
from pipeline.compression import has_batchnorm, max_logit_diff
from pipeline.config import ParamError, parse_group
from pipeline.metrics import accuracy
from pipeline.network import (
    ModelParams,
    build_mlp,
    load_checkpoint,
    predict_logits,
    save_checkpoint,
)
from pipeline.stages.compress import CompressParams, Tuning, compress
from pipeline.training import TrainParams, fit
from pipeline.transform import fit_transform
from tests.conftest import flat_digits

TINY_TRAIN = {"epochs": 3, "batch_size": 64}
TINY_COMPRESS = {
    "structured_epochs": 1,
    "l1": 1e-4,
    "l1_epochs": 1,
    "sparsity": 0.8,
    "steps": 2,
    "step_epochs": 1,
    "final_epochs": 1,
    "polish_epochs": 1,
    "lr": 0.003,
    "sweep": [0.5, 0.9],
}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Prepared tiny splits, a briefly trained dense checkpoint, and a params file."""
    root = tmp_path_factory.mktemp("compress")
    prepared = root / "prepared"
    prepared.mkdir()
    train, dev = flat_digits(600, 1), flat_digits(200, 2)
    for name, (x, y) in (("train", train), ("dev", dev)):
        np.savez(prepared / f"{name}.npz", x=x, y=y)
    transform, _ = fit_transform(train[0], "standardize")
    transform.save(prepared / "transform.npz")
    torch.manual_seed(0)
    model = build_mlp(ModelParams(hidden=(32, 16)), transform)
    fit(model, train, dev, TrainParams(**TINY_TRAIN))
    save_checkpoint(root / "mlp.pt", model)
    params = {"base": {"seed": 3}, "train": TINY_TRAIN, "compress": TINY_COMPRESS}
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    return root


def invoke(root: Path, out: str, params: str = "params.yaml") -> tuple[int, str]:
    """Run `digits compress` on the work directory; exit code and output."""
    args = ["compress", "--params", str(root / params), "--data", str(root / "prepared")]
    args += ["--model", str(root / "mlp.pt"), "--out", str(root / f"{out}.pt")]
    args += ["--metrics", str(root / f"{out}.json"), "--sweep", str(root / f"{out}-sweep.json")]
    result = CliRunner().invoke(cli, args)
    return result.exit_code, result.output


@pytest.fixture(scope="module")
def first_run(workdir: Path) -> Path:
    """The work directory after one successful `digits compress` run named run1."""
    code, output = invoke(workdir, "run1")
    assert code == 0, output
    return workdir


@pytest.mark.slow
def test_stage_writes_a_sparse_folded_checkpoint_and_a_truthful_report(first_run):
    workdir = first_run
    report = json.loads((workdir / "run1.json").read_text())
    model, _ = load_checkpoint(workdir / "run1.pt")
    assert model.spec.hidden == (16, 8)
    assert not has_batchnorm(model) and not model.spec.preprocess
    assert report["sparsity"] == pytest.approx(0.8, abs=1e-3)
    weights = [linear.weight.detach() for linear in model.linears()]
    zeros = sum(int((W == 0).sum()) for W in weights) / sum(W.numel() for W in weights)
    assert report["sparsity"] == pytest.approx(zeros)
    x, y = flat_digits(200, 2)
    assert report["dev_accuracy_after"] == pytest.approx(accuracy(predict_logits(model, x), y))
    assert [row["step"] for row in report["steps"]] == [
        "structured",
        "l1",
        "prune_1",
        "prune_2",
        "polish",
    ]
    assert report["steps"][-1]["sparsity"] == report["steps"][-2]["sparsity"]  # masks held
    assert report["steps"][0]["units_removed_fraction"] == pytest.approx(0.5)
    assert report["folding"]["batchnorm_max_abs_logit_diff"] <= 1e-4
    assert report["folding"]["preprocess_max_abs_logit_diff"] <= 1e-4
    assert report["folding"]["dev_accuracy_after"] == report["dev_accuracy_after"]
    assert [layer["shape"] for layer in report["layers"]] == [[16, 784], [8, 16], [10, 8]]
    assert report["params_nonzero"] < report["dense"]["params_nonzero"] / 4
    sweep = json.loads((workdir / "run1-sweep.json").read_text())
    assert [row["sparsity"] for row in sweep] == [0.5, 0.9]
    assert all(0 <= row["dev_accuracy"] <= 1 for row in sweep)


@pytest.mark.slow
def test_stage_is_repeatable_with_the_same_seed(first_run):
    assert invoke(first_run, "again")[0] == 0
    first, _ = load_checkpoint(first_run / "run1.pt")
    second, _ = load_checkpoint(first_run / "again.pt")
    x, _ = flat_digits(50, 5)
    np.testing.assert_array_equal(predict_logits(first, x), predict_logits(second, x))


def test_with_every_step_off_compress_only_folds(workdir):
    dense, _ = load_checkpoint(workdir / "mlp.pt")
    params = CompressParams(structured_fraction=0, l1=0, sparsity=0, polish_epochs=0, sweep=())
    dev = flat_digits(200, 2)
    tuning = Tuning(flat_digits(100, 1), dev, TrainParams(**TINY_TRAIN), seed=0)
    folded, report = compress(dense, tuning, params)
    assert report["steps"] == []
    assert max_logit_diff(dense, folded, dev[0]) <= 1e-4
    assert report["dev_accuracy_after"] == report["dev_accuracy_before"]


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("sparsity", 1.0),
        ("structured_fraction", -0.1),
        ("scope", "row"),
        ("steps", 0),
        ("polish_lr", 0.0),
    ],
)
def test_bad_params_name_the_key(key, value):
    with pytest.raises(ParamError, match=f"compress.{key}"):
        parse_group(CompressParams, "compress", {key: value})


def test_bad_param_in_the_file_is_one_line_and_writes_nothing(workdir):
    params = yaml.safe_load((workdir / "params.yaml").read_text())
    params["compress"]["sparsity"] = 1.5
    (workdir / "bad.yaml").write_text(yaml.safe_dump(params))
    code, output = invoke(workdir, "bad", params="bad.yaml")
    assert code == 1
    assert output.strip() == "Error: params: compress.sparsity must be in [0, 1)"
    assert not list(workdir.glob("bad*.json")) and not (workdir / "bad.pt").exists()


def test_missing_model_is_a_usage_error(tmp_path):
    result = CliRunner().invoke(cli, ["compress", "--model", str(tmp_path / "none.pt")])
    assert result.exit_code == 2
    assert "does not exist" in result.output
