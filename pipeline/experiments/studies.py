"""Comparison studies: named sets of variants, each run over seeds; their statistics and figures.

A study is variants (params.yaml overrides) plus overrides common to all of them; every
(variant, seed) pair is one DVC experiment. Each variant's dev accuracy is compared with the
best variant's by Welch's t-test over seeds: under p < 0.05 it is "worse", else "within noise",
so no winner is claimed from seed noise. Rankings use dev figures, never test.
Reads and writes nothing itself except through write_figure.
"""

from __future__ import annotations

import hashlib
import json
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from digits.atomic import atomic_path

SEEDS = (42, 1, 2)
ALPHA = 0.05  # Welch's t-test level under which a variant is called worse than the best
NO_REGULARIZATION = {
    "train.weight_decay": 0.0,
    "train.l1": 0.0,
    "model.dropout": 0.0,
    "train.early_stopping": "none",
    "train.augment": False,
}


@dataclass(frozen=True)
class Study:
    """Variants to compare, and the overrides every variant shares."""

    name: str
    description: str
    variants: dict[str, dict[str, Any]]
    common: dict[str, Any] = field(default_factory=dict)


# lr per optimizer: the usual starting point of each (plain SGD needs a larger step than Adam);
# coupled L2 (every optimizer but adamw) at 1e-4, since 0.01 coupled is a strong pull to zero.
OPTIMIZER_LR = {
    "sgd": 0.1,
    "momentum": 0.03,
    "nesterov": 0.03,
    "adagrad": 0.03,
    "rmsprop": 0.001,
    "adam": 0.003,
    "adamw": 0.003,
}
ACTIVATIONS = ("sigmoid", "tanh", "relu", "noisy_relu", "leaky_relu", "prelu", "elu", "gelu")
ACTIVATIONS += ("silu", "softplus")
INITS = ("default", "he_uniform", "he_normal", "xavier_uniform", "xavier_normal")
INITS += ("lecun_uniform", "lecun_normal", "small_normal")

STUDIES = {
    study.name: study
    for study in (
        Study(
            "optimizers",
            "All seven optimizers, each at its usual lr.",
            {
                name: {
                    "train.optimizer": name,
                    "train.lr": lr,
                    "train.weight_decay": 0.01 if name == "adamw" else 1.0e-4,
                }
                for name, lr in OPTIMIZER_LR.items()
            },
        ),
        Study(
            "activations",
            "Every activation (swish is silu's other name), plus maxout.",
            {a: {"model.activation": a} for a in (*ACTIVATIONS, "maxout")},
        ),
        Study(
            "initializations",
            "Weight inits without batchnorm (which would hide them); small_normal is the bad one.",
            {i: {"model.init": i} for i in INITS},
            common={"model.batchnorm": False, "model.hidden": [512, 256, 128]},
        ),
        Study(
            "preprocessing",
            "Input scaling and whitening, fit on the train split.",
            {
                "none": {"data.scaling": "none"},
                "unit": {"data.scaling": "unit"},
                "standardize": {"data.scaling": "standardize"},
                "pca": {"data.whitening": "pca"},
                "zca": {"data.whitening": "zca"},
            },
        ),
        Study(
            "regularization",
            "One regularizer at a time, augmentation off (adamw: L2 is decoupled weight decay).",
            {
                "none": {},
                "l2": {"train.weight_decay": 0.01},
                "l1": {"train.l1": 1.0e-5},
                "dropout": {"model.dropout": 0.2},
                "early-stopping": {"train.early_stopping": "dev_loss"},
            },
            common=NO_REGULARIZATION,
        ),
        Study(
            "batchnorm",
            "BatchNorm1d before each activation, on and off.",
            {"on": {"model.batchnorm": True}, "off": {"model.batchnorm": False}},
        ),
        Study(
            "depth-width",
            "Hidden layers (1-3) x width (128, 512).",
            {
                f"d{depth}-w{width}": {"model.hidden": [width] * depth}
                for depth in (1, 2, 3)
                for width in (128, 512)
            },
        ),
        Study(
            "residual",
            "Plain vs residual (x + block(x)) 64-unit MLPs at depth 6 and 10, dropout off.",
            {
                f"d{depth}-{kind}": {"model.hidden": [64] * depth, "model.residual": kind == "skip"}
                for depth in (6, 10)
                for kind in ("plain", "skip")
            },
            common={"model.dropout": 0.0},
        ),
        Study(
            "noisy-relu",
            "ReLU vs noisy ReLU (Gaussian noise of std model.noise_std on the pre-activation).",
            {"relu": {"model.activation": "relu"}, "noisy": {"model.activation": "noisy_relu"}},
        ),
        Study(
            "max-norm",
            "No constraint vs max-norm 3 on each unit's incoming weights, with dropout 0.5.",
            {"none": {}, "c3": {"train.max_norm": 3.0}},
            common={"model.dropout": 0.5},
        ),
        Study(
            "dense-recipe",
            "The default dense recipe against label smoothing 0.1, twice the width (1024-512), "
            "a weight average (EMA, decay 0.999 per step), twice the epochs (30), and max-norm 3 "
            "with dropout 0.5 (Srivastava et al. 2014).",
            {
                "default": {},
                "smoothing": {"train.label_smoothing": 0.1},
                "wide": {"model.hidden": [1024, 512]},
                "ema": {"train.ema": 0.999},
                "long": {"train.epochs": 30},
                "max-norm": {"train.max_norm": 3.0, "model.dropout": 0.5},
            },
        ),
    )
}


def winner_study(leaderboard: dict[str, Any]) -> Study:
    """The search's best trial at full budget against the defaults."""
    best = leaderboard["trials"][0]
    return Study(
        "winner",
        f"{best['name']}'s params at params.yaml's budget, against params.yaml as is.",
        {"defaults": {}, "winner": best["config"]},
    )


def run_name(study: Study, variant: str, seed: int, common: dict[str, Any]) -> str:
    """The experiment name of one (variant, seed): a digest of what it sets keeps it unique."""
    settings = run_config(study, variant, seed, common)
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()
    return f"{study.name}-{variant}-s{seed}-{digest[:4]}"


def run_config(study: Study, variant: str, seed: int, common: dict[str, Any]) -> dict[str, Any]:
    """The `-S` settings of one (variant, seed): study common, command common, variant, seed."""
    return {**study.common, **common, **study.variants[variant], "base.seed": seed}


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample std (0 for one value)."""
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def welch_p(a: list[float], b: list[float]) -> float:
    """Two-sided Welch's t-test p-value of equal means (nan under two seeds a side)."""
    if len(a) < 2 or len(b) < 2:
        return math.nan
    if statistics.variance(a) == 0 and statistics.variance(b) == 0:
        # No spread (the t statistic is 0/0 or x/0): equal means are no difference at all.
        return 1.0 if statistics.mean(a) == statistics.mean(b) else 0.0
    return float(stats.ttest_ind(a, b, equal_var=False).pvalue)


def verdict(p: float, is_best: bool) -> str:
    """What the table says of a variant against the best one."""
    if is_best:
        return "best"
    if math.isnan(p):
        return "needs ≥ 2 seeds"
    return f"worse (p={p:.3f})" if p < ALPHA else f"within noise (p={p:.2f})"


def summarize(runs: dict[str, list[dict[str, float]]]) -> list[dict[str, Any]]:
    """Per variant: mean ± std of each figure and the verdict against the best mean dev accuracy."""
    rows = []
    for variant, figures in runs.items():
        row: dict[str, Any] = {"variant": variant, "seeds": len(figures)}
        for key in ("dev_accuracy", "train_loss", "dev_loss", "seconds"):
            values = [f[key] for f in figures if f.get(key) is not None]
            row[key] = list(mean_std(values)) if values else None
        row["dev_accuracies"] = [f["dev_accuracy"] for f in figures]
        rows.append(row)
    rows.sort(key=lambda r: -r["dev_accuracy"][0])
    best = rows[0]["dev_accuracies"]
    for i, row in enumerate(rows):
        row["p_vs_best"] = 1.0 if i == 0 else welch_p(row["dev_accuracies"], best)
        row["verdict"] = verdict(row["p_vs_best"], i == 0)
    return rows


def pm(pair: list[float] | None, scale: float = 1.0, digits: int = 4) -> str:
    """`mean ± std` of a figure, or a dash."""
    if pair is None:
        return "—"
    return f"{scale * pair[0]:.{digits}f} ± {scale * pair[1]:.{digits}f}"


def table_markdown(
    study: Study, rows: list[dict[str, Any]], command: str, plots: Sequence[str] = ()
) -> str:
    """The study's table: dev accuracy, final losses, seconds, verdict against the best."""
    head = "| variant | seeds | dev accuracy % | train loss | dev loss | train s | vs best |"
    lines = [head, "|---|---|---|---|---|---|---|"]
    for r in rows:
        cells = [r["variant"], str(r["seeds"]), pm(r["dev_accuracy"], 100, 2)]
        cells += [pm(r["train_loss"]), pm(r["dev_loss"]), pm(r["seconds"], digits=0), r["verdict"]]
        lines.append("| " + " | ".join(cells) + " |")
    notes = (
        f"Study `{study.name}`: {study.description} Mean ± std over seeds; "
        f"Welch's t-test of dev accuracy against the best, α = {ALPHA}.\n\n"
        f"`{command}`\n\n"
    )
    figure = f"\n\n![{study.name}]({study.name}.png)\n"
    if plots:  # DVC draws the same runs' per-epoch curves from each experiment's dvclive files
        figure += f"\nOne seed per variant in DVC's plots: `dvc plots diff {' '.join(plots)}`\n"
    return notes + "\n".join(lines) + figure


def parse_curve(tsv: str) -> list[float]:
    """A dvclive metric file (step<TAB>value lines) -> values by step."""
    return [float(line.split("\t")[1]) for line in tsv.strip().splitlines()[1:]]


def write_figure(path: Path, title: str, curves: dict[str, dict[str, list[list[float]]]]) -> None:
    """Dev accuracy and loss per epoch, one line per variant (mean over seeds; band: min-max)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for variant, by_metric in curves.items():
        for ax, metric in zip(axes, ("accuracy", "loss"), strict=True):
            runs = by_metric.get(metric) or []
            length = min((len(r) for r in runs), default=0)  # early stopping ends runs early
            if not length:
                continue
            values = np.array([r[:length] for r in runs])  # (seeds, epochs)
            epochs = np.arange(1, length + 1)
            (line,) = ax.plot(epochs, values.mean(axis=0), marker="o", markersize=3, label=variant)
            ax.fill_between(epochs, values.min(axis=0), values.max(axis=0), alpha=0.15,
                            color=line.get_color())  # fmt: skip
    for ax, metric in zip(axes, ("accuracy", "loss"), strict=True):
        ax.set(xlabel="epoch", ylabel=f"dev {metric}", title=f"{title}: dev {metric}")
        ax.grid(alpha=0.3)
    axes[1].set_yscale("log")
    axes[0].legend(fontsize="small")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100, metadata={"Software": None})
    plt.close(fig)
