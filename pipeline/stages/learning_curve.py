"""Stage `learning-curve`: fresh networks trained on growing shares of train; error vs size.

Train and dev error against training-set size is the picture that separates bias (both high
and close together) from variance (a gap that shrinks as data grows).
Reads: data/prepared/{train,dev}.npz, data/prepared/transform.npz, params.yaml `base`,
`model`, `train`, `learning_curve`.
Writes: reports/learning_curve.json (one row per fraction: fraction, train_size, epochs,
train_error, dev_error), a DVC plot.
Run: `digits learning-curve`
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import numpy as np

from digits.atomic import write_json
from pipeline.analysis import classification
from pipeline.config import BaseParams, begin_stage, load_group, require, seed_everything
from pipeline.model.network import ModelParams, build_mlp, predict_logits
from pipeline.model.transform import AffineTransform
from pipeline.options import params_option, path_option, prepared_option
from pipeline.training.loop import Data, fit, load_data
from pipeline.training.params import TrainParams


@dataclass(frozen=True)
class LearningCurveParams:
    """params.yaml `learning_curve:` group."""

    fractions: tuple[float, ...] = (0.05, 0.1, 0.25, 0.5, 1.0)
    epochs: float = 1.0  # on the full split; fraction f trains epochs / f, so equal updates each
    max_epochs: int = 20  # cap for the smallest fractions

    def __post_init__(self) -> None:
        fractions = self.fractions
        require(len(fractions) >= 2, "learning_curve.fractions", "needs at least two")
        require(all(0 < f <= 1 for f in fractions), "learning_curve.fractions", "must be in (0, 1]")
        increasing = all(a < b for a, b in zip(fractions, fractions[1:], strict=False))
        require(increasing, "learning_curve.fractions", "must be strictly increasing")
        require(self.epochs > 0, "learning_curve.epochs", "must be > 0")
        require(self.max_epochs >= 1, "learning_curve.max_epochs", "must be >= 1")

    def epochs_for(self, fraction: float) -> int:
        """Epochs for a subset: the same number of updates as `epochs` on the full split."""
        return max(1, min(self.max_epochs, round(self.epochs / fraction)))


def nested_subsets(n: int, fractions: tuple[float, ...], seed: int) -> list[np.ndarray]:
    """Sorted index sets of growing size, each containing the smaller ones (one permutation)."""
    order = np.random.default_rng(seed).permutation(n)
    return [np.sort(order[: max(1, round(f * n))]) for f in fractions]


def learning_curve(
    train_split: Data,
    dev: Data,
    transform: AffineTransform,
    model_params: ModelParams,
    train_params: TrainParams,
    params: LearningCurveParams,
    seed: int,
    log: Callable[[dict], None] | None = None,
) -> list[dict[str, Any]]:
    """Train a fresh network per fraction; its error on its own subset and on dev."""
    rows = []
    subsets = nested_subsets(len(train_split[1]), params.fractions, seed)
    for fraction, idx in zip(params.fractions, subsets, strict=True):
        seed_everything(seed)  # each point starts alike, whatever other fractions are listed
        x, y = train_split[0][idx], train_split[1][idx]
        model = build_mlp(model_params, transform)
        epochs = params.epochs_for(fraction)
        fit(model, (x, y), dev, train_params, epochs=epochs, seed=seed)
        row = {"fraction": fraction, "train_size": len(idx), "epochs": epochs}
        row["train_error"] = classification.error(predict_logits(model, x), y)
        row["dev_error"] = classification.error(predict_logits(model, dev[0]), dev[1])
        rows.append(row)
        if log is not None:
            log(row)
    return rows


@click.command("learning-curve")
@params_option
@prepared_option()
@path_option(
    "--out", default="reports/learning_curve.json", help="Curve JSON to write.", dir_okay=False
)
def learning_curve_command(params_file: Path, prepared: Path, out: Path) -> None:
    """Train on growing fractions of train; write train and dev error against set size."""
    base = load_group(BaseParams, "base", params_file)
    model_params = load_group(ModelParams, "model", params_file)
    train_params = load_group(TrainParams, "train", params_file)
    params = load_group(LearningCurveParams, "learning_curve", params_file)
    begin_stage(base)
    train_split, dev, transform = load_data(prepared)
    rows = learning_curve(
        train_split, dev, transform, model_params, train_params, params, base.seed, log=echo_row
    )
    write_json(out, rows)


def echo_row(row: dict[str, Any]) -> None:
    """One plain progress line per point."""
    click.echo(
        f"{row['train_size']:>6} images, {row['epochs']} epochs: "
        f"train error {row['train_error']:.4f}, dev error {row['dev_error']:.4f}"
    )
