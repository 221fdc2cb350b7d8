"""`digits ensemble`: train k networks that differ by seed, and export them as ONE ONNX model.

Outside `dvc repro` (off by default: k full trainings are k times the train stage's time).
Reads: data/prepared/{train,dev,test}.npz, transform.npz, params.yaml `base`, `model`, `train`,
`ensemble`. Member i is the train stage's network trained with seed base.seed + i, so member 0
is models/mlp.pt's twin. Writes models/digits-ensemble.onnx (the digits.onnx contract: serve it
with `digits serve --model models/digits-ensemble.onnx`, score with `digits score`), its golden
vectors beside it, and reports/ensemble.json: each member's and the ensemble's dev and test
accuracy, the members' mean and std, ONNX parity with torch and the file size.
Run: `digits ensemble`
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import numpy as np
import onnx

from digits.atomic import atomic_path, write_json
from digits.contract import THRESHOLD_KEY, VERSION_KEY
from digits.golden import golden_path, write_golden
from digits.npz import read_split
from pipeline.analysis.classification import FLAG_ACCURACY, accuracy, low_confidence_threshold
from pipeline.config import BaseParams, begin_stage, load_group, seed_everything
from pipeline.model.network import MLP, ModelParams, build_mlp, predict_logits
from pipeline.model.transform import AffineTransform
from pipeline.onnx_export.ensemble_graph import (
    Ensemble,
    EnsembleParams,
    build_ensemble_onnx,
    ensemble_probabilities,
)
from pipeline.onnx_export.graph import compare, golden_vectors, model_metadata, save_onnx
from pipeline.onnx_export.plain_session import cpu_session, onnx_probabilities
from pipeline.options import params_option, path_option, prepared_option
from pipeline.training.loop import Data, fit, load_data
from pipeline.training.params import TrainParams

OPSET = 18  # as export.opset's default: the torch exporter's own opset
MAX_PROB_DIFF = 1e-5  # ONNX vs torch on the test set, as export.max_prob_diff: else nothing written


@dataclass(frozen=True)
class Splits:
    """The three prepared splits and the fitted transform."""

    train: Data
    dev: Data
    test: Data
    transform: AffineTransform


def train_members(
    model_params: ModelParams, params: TrainParams, splits: Splits, seeds: list[int]
) -> list[MLP]:
    """One network per seed, each built and trained exactly as the train stage would."""
    members = []
    for seed in seeds:
        seed_everything(seed)
        model = build_mlp(model_params, splits.transform)
        fit(model, splits.train, splits.dev, params, seed=seed, progress=sys.stderr.isatty())
        click.echo(f"member seed {seed}: dev accuracy {member_accuracy(model, splits.dev):.4f}")
        members.append(model.eval())
    return members


def member_accuracy(model: MLP, data: Data) -> float:
    """Accuracy of one network on a split."""
    return accuracy(predict_logits(model, data[0]), data[1])


def accuracy_table(
    members: list[MLP], seeds: list[int], ensemble: Ensemble, splits: Splits
) -> dict[str, Any]:
    """Dev and test accuracy of each member and of the ensemble; the members' mean and std."""
    rows = [
        {
            "seed": seed,
            "dev_accuracy": member_accuracy(m, splits.dev),
            "test_accuracy": member_accuracy(m, splits.test),
        }
        for seed, m in zip(seeds, members, strict=True)
    ]
    table: dict[str, Any] = {"members": rows}
    for split in ("dev", "test"):
        x, y = getattr(splits, split)
        values = [row[f"{split}_accuracy"] for row in rows]
        table[f"{split}_accuracy"] = accuracy(ensemble_probabilities(ensemble, x), y)
        table[f"members_{split}_mean"] = float(np.mean(values))
        table[f"members_{split}_std"] = float(np.std(values, ddof=1))
        table[f"{split}_gain"] = table[f"{split}_accuracy"] - table[f"members_{split}_mean"]
    return table


def export_ensemble(
    members: list[MLP], params: EnsembleParams, test: Data, path: Path, provenance: dict
) -> dict[str, Any]:
    """Write the ensemble as one checked ONNX file with golden vectors, if it matches torch."""
    proto = build_ensemble_onnx(members, params.combine, OPSET)
    props = model_metadata(proto, provenance)
    onnx.helper.set_model_props(proto, props)
    reference = ensemble_probabilities(Ensemble(members, params.combine), test[0])  # unfolded
    with (
        atomic_path(path, suffix=".onnx") as tmp,
        atomic_path(golden_path(path), suffix=".npz") as golden,
    ):
        save_onnx(proto, tmp)
        parity = compare(reference, onnx_probabilities(cpu_session(tmp), test[0]))
        if parity["max_abs_prob_diff"] > MAX_PROB_DIFF or parity["argmax_agreement"] < 1:
            raise click.ClickException(
                f"ensemble ONNX disagrees with torch: max |Δp| {parity['max_abs_prob_diff']:.2e}"
                f" (limit {MAX_PROB_DIFF:.0e}), argmax agreement {parity['argmax_agreement']:.4%}"
            )
        write_golden(golden, golden_vectors(tmp, test[0], props[VERSION_KEY]))
        size = tmp.stat().st_size
    return {**parity, "file_bytes": size, "opset": OPSET, "metadata": props}


@click.command("ensemble")
@params_option
@prepared_option()
@path_option(
    "--out", default="models/digits-ensemble.onnx", help="ONNX file to write.", dir_okay=False
)
@path_option(
    "--report", default="reports/ensemble.json", help="Figures JSON to write.", dir_okay=False
)
def ensemble_command(params_file: Path, prepared: Path, out: Path, report: Path) -> None:
    """Train params `ensemble.members` networks by seed; export them as one ONNX model."""
    base = load_group(BaseParams, "base", params_file)
    begin_stage(base)
    model_params = load_group(ModelParams, "model", params_file)
    train_params = load_group(TrainParams, "train", params_file)
    params = load_group(EnsembleParams, "ensemble", params_file)
    train, dev, transform = load_data(prepared)
    splits = Splits(train, dev, read_split(prepared / "test.npz"), transform)
    seeds = [base.seed + i for i in range(params.members)]
    members = train_members(model_params, train_params, splits, seeds)
    table = accuracy_table(members, seeds, Ensemble(members, params.combine), splits)
    provenance = {
        "ensemble": f"{params.members} members by seed, {params.combine}",
        "dev_accuracy": table["dev_accuracy"],
        "test_accuracy": table["test_accuracy"],
        # chosen on dev by evaluate's default rule, as one model's is; serving flags below it
        THRESHOLD_KEY: low_confidence_threshold(
            ensemble_probabilities(Ensemble(members, params.combine), splits.dev[0]),
            splits.dev[1],
            FLAG_ACCURACY,
        ),
    }
    exported = export_ensemble(members, params, splits.test, out, provenance)
    write_json(report, {"combine": params.combine, **table, "onnx": exported})
    click.echo(
        f"ensemble of {params.members} ({params.combine}): test accuracy "
        f"{table['test_accuracy']:.4f}, members {table['members_test_mean']:.4f} ± "
        f"{table['members_test_std']:.4f}; max |Δp| {exported['max_abs_prob_diff']:.1e} -> {out}"
    )
