"""Stage `prepare`: split train/dev, fit scaling + whitening on train only, save the transform.

Reads: data/raw/ (IDX), params.yaml `base`, `data`.
Writes: data/prepared/{train,dev,test}.npz (`x` uint8 N×784, `y` int64),
data/prepared/transform.npz (`mean`, `matrix`), reports/prepare.json (stats).
Run: `digits prepare`
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import click
import numpy as np

from digits.atomic import atomic_dir, refuse_foreign, write_json
from digits.contract import PIXELS
from digits.idx import IdxError, read_idx
from pipeline.config import BaseParams, begin_stage, load_group, require
from pipeline.model.transform import Scaling, Whitening, fit_transform, spectrum_summary
from pipeline.options import params_option, path_option

# What `digits prepare` writes into --out, and so may replace there.
OUTPUTS = ("train.npz", "dev.npz", "test.npz", "transform.npz")


@dataclass(frozen=True)
class DataParams:
    """params.yaml `data:` group."""

    dev_fraction: float = 0.1
    seed: int = 0
    scaling: Scaling = "standardize"
    per_pixel: bool = True
    whitening: Whitening = "none"
    epsilon: float = 0.1
    components: int | None = None

    def __post_init__(self) -> None:
        require(0 < self.dev_fraction < 1, "data.dev_fraction", "must be between 0 and 1")
        require(self.seed >= 0, "data.seed", "must be >= 0")
        require(self.epsilon > 0, "data.epsilon", "must be > 0")
        if self.components is not None:
            require(
                1 <= self.components <= PIXELS, "data.components", f"must be in 1..{PIXELS} or null"
            )
            require(self.whitening != "none", "data.components", "needs whitening pca or zca")


def load_split(raw_dir: Path, prefix: str) -> tuple[np.ndarray, np.ndarray]:
    """One official split (`train` or `t10k`): uint8 (N, 784) images, int64 (N,) labels."""
    images = read_idx(raw_dir / f"{prefix}-images-idx3-ubyte")
    labels = read_idx(raw_dir / f"{prefix}-labels-idx1-ubyte")
    if images.ndim != 3 or images.dtype != np.uint8 or labels.ndim != 1:
        raise IdxError(f"{raw_dir}/{prefix}: expected uint8 N×rows×cols images and N labels")
    if len(images) != len(labels):
        raise IdxError(f"{raw_dir}/{prefix}: {len(images)} images but {len(labels)} labels")
    return images.reshape(len(images), -1), labels.astype(np.int64)


def split_stratified(
    y: np.ndarray, dev_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, dev), each class split in the same proportion, repeatable by seed."""
    rng = np.random.default_rng(seed)
    train, dev = [], []
    for label in np.unique(y):
        members = rng.permutation(np.flatnonzero(y == label))
        n_dev = int(round(len(members) * dev_fraction))
        dev.append(members[:n_dev])
        train.append(members[n_dev:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(dev))


def class_counts(y: np.ndarray) -> list[int]:
    """Count of each digit 0–9."""
    return np.bincount(y, minlength=10).tolist()


def prepare(raw_dir: Path, out_dir: Path, params: DataParams) -> dict:
    """Split, fit the transform on train only, write the prepared data; return the stats."""
    refuse_foreign(out_dir, OUTPUTS, "digits prepare")  # before the minutes of work
    x_all, y_all = load_split(raw_dir, "train")
    x_test, y_test = load_split(raw_dir, "t10k")
    train_idx, dev_idx = split_stratified(y_all, params.dev_fraction, params.seed)
    x_train = x_all[train_idx]
    transform, spectrum = fit_transform(
        x_train,
        scaling=params.scaling,
        per_pixel=params.per_pixel,
        whitening=params.whitening,
        epsilon=params.epsilon,
        components=params.components,
    )
    with atomic_dir(out_dir, OUTPUTS, "digits prepare") as tmp:
        np.savez(tmp / "train.npz", x=x_train, y=y_all[train_idx])
        np.savez(tmp / "dev.npz", x=x_all[dev_idx], y=y_all[dev_idx])
        np.savez(tmp / "test.npz", x=x_test, y=y_test)
        transform.save(tmp / "transform.npz")
    stats = {
        "counts": {
            "train": class_counts(y_all[train_idx]),
            "dev": class_counts(y_all[dev_idx]),
            "test": class_counts(y_test),
        },
        "sizes": {"train": len(train_idx), "dev": len(dev_idx), "test": len(y_test)},
        "features": int(transform.matrix.shape[1]),
    }
    if spectrum is not None:
        stats["spectrum"] = spectrum_summary(spectrum, transform.matrix.shape[1])
    return stats


@click.command("prepare")
@params_option
@path_option("--raw", "raw_dir", default="data/raw", help="Directory with the four IDX files.")
@path_option(
    "--out", "out_dir", default="data/prepared", help="Where to write the splits and transform."
)
@path_option(
    "--stats",
    "stats_file",
    default="reports/prepare.json",
    help="Stats JSON to write.",
    dir_okay=False,
)
def prepare_command(params_file: Path, raw_dir: Path, out_dir: Path, stats_file: Path) -> None:
    """Split train/dev (stratified), fit scaling and whitening on train, save the transform."""
    base = load_group(BaseParams, "base", params_file)
    params = load_group(DataParams, "data", params_file)
    begin_stage(base)
    stats = prepare(raw_dir, out_dir, params)
    write_json(stats_file, stats)
    sizes = stats["sizes"]
    click.echo(
        f"prepared train {sizes['train']}, dev {sizes['dev']}, test {sizes['test']} "
        f"-> {stats['features']} features in {out_dir}"
    )
