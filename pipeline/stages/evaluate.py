"""Stage `evaluate`: both models on train, dev and test; bias/variance diagnosis.

The only stage that reads the test split.
Reads: models/mlp.pt, models/mlp-compressed.pt, data/prepared/{train,dev,test}.npz,
params.yaml `base`, `evaluate`.
Writes: reports/evaluate.json (DVC metrics: accuracy, error, loss per split and model; the
diagnosis), reports/evaluate/ (detail.json with per-class scores, confusion matrices and
reliability data; confusion_<model>.json and calibration_<model>.json for `dvc plots`;
errors.json, the most confidently wrong test images).
Run: `digits evaluate`
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import click
import numpy as np

from digits.atomic import atomic_dir, refuse_foreign, write_json
from digits.npz import read_split
from pipeline.analysis import classification
from pipeline.analysis.bias_variance import diagnose
from pipeline.config import BaseParams, begin_stage, load_group, require
from pipeline.model.network import load_checkpoint, predict_logits
from pipeline.options import params_option, path_option, prepared_option

SPLITS = ("train", "dev", "test")
# What `digits evaluate` writes into --out, and so may replace there.
OUTPUTS = ("detail.json", "confusion_*.json", "calibration_*.json")


@dataclass(frozen=True)
class EvaluateParams:
    """params.yaml `evaluate:` group."""

    bayes_error: float = 0.002  # human-level / Bayes error proxy
    bias_threshold: float = 0.01  # avoidable bias above this is high bias
    variance_threshold: float = 0.01  # dev - train error above this is high variance
    mismatch_threshold: float = 0.01  # |test - dev error| above this flags a mismatch
    calibration_bins: int = 15
    worst_errors: int = 25
    # Low confidence: the threshold is chosen on dev so that the answers below it are right at
    # most this often; export writes it into the model, serving and score flag such answers.
    flag_accuracy: float = classification.FLAG_ACCURACY

    def __post_init__(self) -> None:
        require(0 <= self.bayes_error < 1, "evaluate.bayes_error", "must be in [0, 1)")
        require(self.bias_threshold >= 0, "evaluate.bias_threshold", "must be >= 0")
        require(self.variance_threshold >= 0, "evaluate.variance_threshold", "must be >= 0")
        require(self.mismatch_threshold >= 0, "evaluate.mismatch_threshold", "must be >= 0")
        require(self.calibration_bins >= 1, "evaluate.calibration_bins", "must be >= 1")
        require(self.worst_errors >= 0, "evaluate.worst_errors", "must be >= 0")
        require(0 <= self.flag_accuracy < 1, "evaluate.flag_accuracy", "must be in [0, 1)")


def evaluate_model(
    model: Any, splits: dict[str, tuple[np.ndarray, np.ndarray]], params: EvaluateParams
) -> dict[str, Any]:
    """classification.summarize of the model on each split, plus the most confidently wrong
    test images."""
    bins = params.calibration_bins
    logits = {name: predict_logits(model, x) for name, (x, _) in splits.items()}
    detail = {
        name: classification.summarize(logits[name], y, bins) for name, (_, y) in splits.items()
    }
    detail["worst_errors"] = worst_errors(logits["test"], splits["test"][1], params.worst_errors)
    detail["low_confidence"] = low_confidence(logits, splits, params.flag_accuracy)
    return detail


def low_confidence(
    logits: dict[str, np.ndarray], splits: dict[str, tuple[np.ndarray, np.ndarray]], rule: float
) -> dict[str, Any]:
    """The low-confidence threshold chosen on dev, and what it flags on each split."""
    probs = {name: classification.softmax(z.astype(np.float64)) for name, z in logits.items()}
    threshold = classification.low_confidence_threshold(probs["dev"], splits["dev"][1], rule)
    figures = {
        name: classification.flagged_figures(probs[name], y, threshold)
        for name, (_, y) in splits.items()
    }
    return {"threshold": threshold, "flag_accuracy": rule, **figures}


def worst_errors(logits: np.ndarray, y: np.ndarray, k: int) -> list[dict[str, Any]]:
    """The k most confidently wrong rows: index, label, predicted digit, confidence."""
    probs = classification.softmax(logits.astype(np.float64))
    return [
        {
            "index": int(i),
            "label": int(y[i]),
            "predicted": int(probs[i].argmax()),
            "confidence": float(probs[i].max()),
        }
        for i in classification.confident_errors(probs, y, k)
    ]


def headline(detail: dict[str, Any]) -> dict[str, float]:
    """The scalar figures of one model for evaluate.json: per split accuracy, error, loss."""
    figures = {}
    for split in SPLITS:
        for key in ("accuracy", "error", "loss"):
            figures[f"{split}_{key}"] = detail[split][key]
    figures["test_macro_f1"] = detail["test"]["macro_f1"]
    figures["test_ece"] = detail["test"]["ece"]
    flags = detail["low_confidence"]
    figures["confidence_threshold"] = flags["threshold"]
    figures["test_flagged_share"] = flags["test"]["flagged_share"]
    figures["test_flagged_accuracy"] = flags["test"]["flagged_accuracy"]
    return figures


def plot_rows(detail: dict[str, Any]) -> dict[str, list[dict]]:
    """DVC plot data of one model on test: (actual, predicted) rows and reliability points."""
    confusion = np.asarray(detail["test"]["confusion"])
    pairs = [(a, p) for a in range(len(confusion)) for p in range(len(confusion))]
    rows = [{"actual": a, "predicted": p} for a, p in pairs for _ in range(confusion[a, p])]
    curve = detail["test"]["reliability"]
    points = [
        {"confidence": conf, "accuracy": acc, "count": n}
        for n, conf, acc in zip(curve["count"], curve["confidence"], curve["accuracy"], strict=True)
        if n
    ]
    return {"confusion": rows, "calibration": points}


def load_splits(prepared: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The train, dev and test splits as (x, y)."""
    return {name: read_split(prepared / f"{name}.npz") for name in SPLITS}


def run_stage(
    params_file: Path, prepared: Path, models: dict[str, Path], out_dir: Path
) -> dict[str, Any]:
    """Evaluate each model, write the detail and plot files; return evaluate.json's content."""
    refuse_foreign(out_dir, OUTPUTS, "digits evaluate")  # before any model runs
    begin_stage(load_group(BaseParams, "base", params_file))
    params = load_group(EvaluateParams, "evaluate", params_file)
    splits = load_splits(prepared)
    details = {
        name: evaluate_model(load_checkpoint(path)[0], splits, params)
        for name, path in models.items()
    }
    summary: dict[str, Any] = {name: headline(detail) for name, detail in details.items()}
    summary["diagnosis"] = {
        name: diagnose(*(figures[f"{split}_error"] for split in SPLITS), params)
        for name, figures in summary.items()
    }
    with atomic_dir(out_dir, OUTPUTS, "digits evaluate") as tmp:
        write_json(tmp / "detail.json", {"params": asdict(params), **details})
        for name, detail in details.items():
            for kind, rows in plot_rows(detail).items():
                write_json(tmp / f"{kind}_{name}.json", rows)
    return summary


@click.command("evaluate")
@params_option
@prepared_option()
@path_option(
    "--dense", default="models/mlp.pt", help="Dense checkpoint.", dir_okay=False, exists=True
)
@path_option(
    "--compressed",
    default="models/mlp-compressed.pt",
    help="Compressed checkpoint.",
    dir_okay=False,
    exists=True,
)
@path_option(
    "--out",
    "out_dir",
    default="reports/evaluate",
    help="Directory for the detail and plot files.",
    file_okay=False,
)
@path_option(
    "--metrics",
    "metrics_file",
    default="reports/evaluate.json",
    help="Metrics JSON to write.",
    dir_okay=False,
)
def evaluate_command(
    params_file: Path,
    prepared: Path,
    dense: Path,
    compressed: Path,
    out_dir: Path,
    metrics_file: Path,
) -> None:
    """Evaluate the dense and compressed models on train, dev and test; diagnose bias/variance."""
    models = {"dense": dense, "compressed": compressed}
    summary = run_stage(params_file, prepared, models, out_dir)
    write_json(metrics_file, summary)
    for name in models:
        figures, verdict = summary[name], summary["diagnosis"][name]["verdict"]
        click.echo(
            f"{name}: error train {figures['train_error']:.4f} dev {figures['dev_error']:.4f} "
            f"test {figures['test_error']:.4f} -> {verdict}"
        )
