"""The compress stage on tiny data: the recipe, the report, the checkpoint, bad input."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
import yaml
from click.testing import CliRunner

from digits.cli import cli
from pipeline.analysis.classification import accuracy
from pipeline.compression.folding import has_batchnorm, max_logit_diff
from pipeline.compression.pruning import effective_weight
from pipeline.config import ParamError, parse_group
from pipeline.model.network import (
    ModelParams,
    build_mlp,
    load_checkpoint,
    predict_logits,
    save_checkpoint,
)
from pipeline.model.transform import fit_transform
from pipeline.onnx_export.graph import to_onnx
from pipeline.stages.compress import CompressParams, Tuning, compress
from pipeline.training.loop import fit
from pipeline.training.params import TrainParams
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
        ("sensitivity_levels", [0.9, 0.5]),
        ("sensitivity_levels", [0.5, 1.0]),
        ("max_dev_drop", -0.1),
        ("strict", "yes"),
        ("budget", 0),
        ("budget", 2.5),
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


def learned_zero_share(model) -> float:
    """Zero share of the model's Linear weights (the fixed map, when kept, is not one of them)."""
    weights = [effective_weight(linear) for linear in model.linears()]
    return sum(int((W == 0).sum()) for W in weights) / sum(W.numel() for W in weights)


# One cheap recipe for every whitening option: prune to 90 % in one step, one fine-tune epoch.
QUICK = CompressParams(
    structured_fraction=0, l1=0, sparsity=0.9, steps=1, final_epochs=1, polish_epochs=0, sweep=()
)


@pytest.mark.parametrize(
    ("data_options", "hidden", "unmix", "map_kept"),
    [
        ({}, (32, 16), True, False),
        ({"whitening": "pca", "components": 20}, (32, 16), True, False),
        ({"whitening": "zca"}, (32, 16), True, False),
        ({"whitening": "pca", "components": 20}, (32, 16), False, True),
        pytest.param(  # wide enough that folding the map would make the model larger
            {"whitening": "zca"}, (1600, 16), False, True, marks=pytest.mark.slow
        ),
    ],
    ids=["none", "pca20", "zca", "pca20-pruned-whitened", "zca-pruned-whitened"],
)
def test_every_whitening_option_compresses_honestly_and_exports_in_parity(
    tmp_path, data_options, hidden, unmix, map_kept
):
    train, dev = flat_digits(600, 1), flat_digits(200, 2)
    transform, _ = fit_transform(train[0], "standardize", **data_options)
    torch.manual_seed(0)
    dense = build_mlp(ModelParams(hidden=hidden), transform)
    fit(dense, train, dev, TrainParams(epochs=1, batch_size=64))
    tuning = Tuning(train, dev, TrainParams(**TINY_TRAIN), seed=0)
    folded, report = compress(dense, tuning, dataclasses.replace(QUICK, unmix_whitening=unmix))
    save_checkpoint(tmp_path / "c.pt", folded, sparsity=report["sparsity"])
    model, _ = load_checkpoint(tmp_path / "c.pt")
    assert report["folding"]["whitening_unmixed_before_pruning"] is (unmix and bool(data_options))
    if report["folding"]["whitening_unmixed_before_pruning"]:  # pruned on pixels, 784 wide
        assert model.linears()[0].weight.shape[1] == 784
        assert report["importance"] == "input_scaled"  # auto: |w| misleads after unmixing
    else:
        assert report["importance"] == "magnitude"
    assert model.spec.preprocess is map_kept
    assert report["folding"]["preprocess"]["folded"] is not map_kept
    assert report["sparsity"] == pytest.approx(0.9, abs=1e-3)
    assert report["sparsity"] == pytest.approx(learned_zero_share(model))
    nonzero = sum(int(effective_weight(linear).count_nonzero()) for linear in model.linears())
    map_entries = 784 * transform.matrix.shape[1] if map_kept else 0
    assert report["deployed"] == {
        "weights_nonzero": nonzero,
        "preprocess_map_entries": map_entries,
        "macs_per_image": nonzero + map_entries,
        "nonzero_total": nonzero + map_entries,  # a PCA map's floats: none exactly zero
    }
    assert report["folding"]["total_max_abs_logit_diff"] <= 1e-4
    to_onnx(model, tmp_path / "c.onnx", opset=18)
    session = ort.InferenceSession(str(tmp_path / "c.onnx"), providers=["CPUExecutionProvider"])
    probs = session.run(["probabilities"], {"pixels": dev[0].astype(np.float32)})[0]
    oracle = torch.softmax(torch.from_numpy(predict_logits(model, dev[0])), dim=1).numpy()
    assert np.abs(probs - oracle).max() <= 1e-5


def write_params(workdir: Path, name: str, **compress_options) -> str:
    """A params file like the module's, with some compress options changed; its name."""
    params = yaml.safe_load((workdir / "params.yaml").read_text())
    params["compress"].update(compress_options)
    (workdir / name).write_text(yaml.safe_dump(params))
    return name


# Every fine-tune and the steps around pruning off: the targets, not the recipe, are under test.
PRUNE_ONLY = {
    "structured_fraction": 0,
    "l1": 0,
    "steps": 1,
    "step_epochs": 0,
    "final_epochs": 0,
    "polish_epochs": 0,
}
# Sensitivity allocation capped at 50 % per layer cannot reach 90 %: a sure miss of sparsity.
UNREACHABLE = {
    **PRUNE_ONLY,
    "scope": "sensitivity",
    "sensitivity_levels": [0.5],
    "sparsity": 0.9,
    "max_dev_drop": 100.0,
}


def test_a_missed_target_warns_and_says_so_in_the_report(workdir):
    code, output = invoke(workdir, "miss", params=write_params(workdir, "miss.yaml", **UNREACHABLE))
    assert code == 0, output
    warnings = [line for line in output.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "sparsity" in warnings[0]
    assert "max_dev_drop" not in warnings[0]
    report = json.loads((workdir / "miss.json").read_text())
    assert report["targets_met"] is False
    assert report["targets"]["sparsity"]["met"] is False
    assert report["targets"]["max_dev_drop_pp"]["met"] is True
    assert report["sensitivity"]["allocation"] == pytest.approx(
        {"blocks.0.linear": 0.5, "blocks.1.linear": 0.5, "head": 0.5}
    )


def test_a_missed_target_with_strict_fails_in_one_line_and_writes_nothing(workdir):
    name = write_params(workdir, "strict.yaml", strict=True, **UNREACHABLE)
    args = ["compress", "--params", str(workdir / name), "--data", str(workdir / "prepared")]
    args += ["--model", str(workdir / "mlp.pt"), "--out", str(workdir / "strict.pt")]
    args += ["--metrics", str(workdir / "strict.json"), "--sweep", str(workdir / "strict-s.json")]
    result = CliRunner().invoke(cli, args)
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert result.exit_code == 1 and len(errors) == 1, result.output
    assert "compress.strict" in errors[0] and "sparsity" in errors[0]
    assert "Traceback" not in result.output
    assert not list(workdir.glob("strict*.json")) and not (workdir / "strict.pt").exists()


def test_a_budget_prunes_past_the_sparsity_until_the_deployed_weights_fit(workdir):
    name = write_params(workdir, "budget.yaml", **PRUNE_ONLY, max_dev_drop=100.0, budget=500)
    code, output = invoke(workdir, "budget", params=name)
    assert code == 0 and "warning" not in output, output
    report = json.loads((workdir / "budget.json").read_text())
    model, _ = load_checkpoint(workdir / "budget.pt")
    nonzero = sum(int(linear.weight.count_nonzero()) for linear in model.linears())
    assert report["deployed"]["nonzero_total"] == nonzero == 500
    assert report["targets"]["budget"] == {"target": 500, "reached": 500, "met": True}
    assert report["sparsity"] > 0.8  # the sparsity param asked for less


def test_a_budget_the_recipe_cannot_reach_warns_or_fails_when_strict(workdir):
    # Sensitivity shares capped at 50 % leave far more than 500 weights.
    name = write_params(workdir, "over.yaml", **UNREACHABLE, budget=500)
    code, output = invoke(workdir, "over", params=name)
    warnings = [line for line in output.splitlines() if line.startswith("warning:")]
    assert code == 0 and len(warnings) == 1 and "budget" in warnings[0], output
    assert "(target 500)" in warnings[0]
    report = json.loads((workdir / "over.json").read_text())
    assert report["targets"]["budget"]["met"] is False
    assert report["targets"]["budget"]["reached"] == report["deployed"]["nonzero_total"] > 500
    strict = write_params(workdir, "over-strict.yaml", **UNREACHABLE, budget=500, strict=True)
    code, output = invoke(workdir, "over-strict", params=strict)
    assert code == 1 and "compress.strict" in output and "budget" in output, output
    assert not (workdir / "over-strict.pt").exists()
    assert not (workdir / "over-strict.json").exists()


def test_met_targets_say_so_without_a_warning(workdir):
    name = write_params(workdir, "met.yaml", **PRUNE_ONLY, max_dev_drop=100.0, sparsity=0.5)
    code, output = invoke(workdir, "met", params=name)
    assert code == 0 and "warning" not in output, output
    assert json.loads((workdir / "met.json").read_text())["targets_met"] is True


def test_sensitivity_scope_reaches_the_global_target_with_the_reported_per_layer_shares(workdir):
    options = {**PRUNE_ONLY, "scope": "sensitivity", "max_dev_drop": 100.0, "final_epochs": 1}
    name = write_params(workdir, "sens.yaml", **options)
    code, output = invoke(workdir, "sens", params=name)
    assert code == 0, output
    report = json.loads((workdir / "sens.json").read_text())
    allocation = report["sensitivity"]["allocation"]
    assert report["sparsity"] == pytest.approx(0.8, abs=1e-3)
    for layer in report["layers"]:  # standardize folds losslessly: these are the learned zeros
        share = allocation[layer["layer"]]  # masks hold whole weights: off by rounding at most
        assert layer["sparsity"] == pytest.approx(share, abs=0.5 / layer["weights"] + 1e-9)
    assert set(report["sensitivity"]["dev_drop"]) == set(allocation)
