"""Stage `train`: fit the MLP on the train split, pick epochs on dev, save the dense checkpoint.

Reads: data/prepared/{train,dev}.npz, data/prepared/transform.npz, params.yaml `base`, `model`,
`train`, `diagnostics` (the test split is never read here).
Writes: models/mlp.pt (checkpoint), models/train-state.pt (resume state, every epoch),
reports/train.json (final figures and the diagnostics' verdict), dvclive/ (per-epoch metrics,
per-layer diagnostics among them, and plots), reports/train/ (diagnostics.json: every epoch's
per-layer figures with weight histograms; pictures.json: first-layer weights as images and dev
hidden codes projected by PCA), logs/train.json (seconds: a run log, outside DVC's hashes).
Run: `digits train` (`digits train --resume` continues an interrupted run).
"""

from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path
from typing import Any

import click

from digits.atomic import write_json
from pipeline.analysis.network_pictures import first_layer_images, hidden_codes, project_pca
from pipeline.analysis.training_health import DiagnosticsParams, make_probe, scalar_figures, verdict
from pipeline.config import BaseParams, begin_stage, load_group
from pipeline.model.network import MLP, ModelParams, build_mlp, save_checkpoint
from pipeline.options import params_option, path_option, prepared_option
from pipeline.run_log import write_run_log
from pipeline.training.loop import Data, evaluate, fit, load_data, take_subset
from pipeline.training.params import TrainParams

WEIGHT_IMAGES = 32  # first-layer units drawn as 28×28 images
PCA_IMAGES = 2000  # dev images whose hidden codes the report plots


def run_stage(
    params_file: Path, prepared: Path, out: Path, resume: bool
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Build, train, save; return the final figures for reports/train.json and reports/train/."""
    from dvclive import Live

    base = load_group(BaseParams, "base", params_file)
    model_params = load_group(ModelParams, "model", params_file)
    params = load_group(TrainParams, "train", params_file)
    diagnostics = load_group(DiagnosticsParams, "diagnostics", params_file)
    begin_stage(base)
    train, dev, transform = load_data(prepared)
    train = take_subset(train, params.subset, base.seed)
    model = build_mlp(model_params, transform)
    with Live("dvclive", resume=resume, dvcyaml=None, save_dvc_exp=False) as live:
        history = fit(
            model,
            train,
            dev,
            params,
            log=lambda row: log_epoch(live, row),
            seed=base.seed,
            state_path=out.parent / "train-state.pt",
            resume=resume,
            progress=sys.stderr.isatty(),
            probe=make_probe(dev, diagnostics),
        )
    save_checkpoint(out, model, model_params=dataclasses.asdict(model_params))
    final = {f"train_{k}": v for k, v in evaluate(model, train).items()}
    final.update({f"dev_{k}": v for k, v in evaluate(model, dev).items()})
    final.update(epochs=len(history), diagnosis=verdict(history, diagnostics))
    per_epoch = [{"epoch": r["epoch"], **r["diagnostics"]} for r in history if "diagnostics" in r]
    return final, {"diagnostics": per_epoch, "pictures": pictures(model, dev)}


def pictures(model: MLP, dev: Data) -> dict[str, Any]:
    """First-layer weights as images and dev hidden codes in 2-D, rounded for a small JSON."""
    coords, variance = project_pca(hidden_codes(model, dev[0][:PCA_IMAGES]))
    return {
        "first_layer": first_layer_images(model, WEIGHT_IMAGES).round(5).tolist(),
        "pca": coords.round(4).tolist(),
        "pca_labels": dev[1][:PCA_IMAGES].tolist(),
        "pca_variance": variance.tolist(),
    }


def log_epoch(live: Any, row: dict) -> None:
    """Send one epoch's figures, per-layer diagnostics too, to dvclive; print a plain line."""
    for key, value in row.items():
        if key not in ("epoch", "diagnostics"):
            live.log_metric(key.replace("_", "/", 1), value)
    for key, value in scalar_figures(row.get("diagnostics", {"layers": {}})).items():
        live.log_metric(f"diagnostics/{key}", value)
    live.next_step()
    click.echo(
        f"epoch {row['epoch']}: train loss {row['train_loss']:.4f} acc {row['train_accuracy']:.4f}"
        f" | dev loss {row['dev_loss']:.4f} acc {row['dev_accuracy']:.4f} | lr {row['lr']:.2e}"
    )


@click.command("train")
@params_option
@prepared_option(must_exist=False)
@path_option("--out", default="models/mlp.pt", help="Checkpoint to write.", dir_okay=False)
@path_option(
    "--metrics",
    "metrics_file",
    default="reports/train.json",
    help="Final figures JSON.",
    dir_okay=False,
)
@click.option("--resume", is_flag=True, help="Continue from train-state.pt beside --out.")
def train_command(
    params_file: Path, prepared: Path, out: Path, metrics_file: Path, resume: bool
) -> None:
    """Train the MLP on the train split, scoring dev every epoch; write checkpoint and metrics."""
    started = time.perf_counter()
    final, detail = run_stage(params_file, prepared, out, resume)
    seconds = round(time.perf_counter() - started, 1)  # a run log: not part of the metrics
    write_json(metrics_file, final)
    for name, content in detail.items():
        write_json(metrics_file.with_suffix("") / f"{name}.json", content)
    write_run_log("train", {"seconds": seconds, "epochs": final["epochs"], "resumed": resume})
    click.echo(
        f"trained {final['epochs']} epochs in {seconds} s: "
        f"dev accuracy {final['dev_accuracy']:.4f} -> {out}; "
        f"diagnosis: {final['diagnosis']['verdict']}"
    )
