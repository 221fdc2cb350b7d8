"""Fixtures and helpers the pipeline tests share: one thread, tiny projected splits, tiny nets."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.model.network import MLP, ModelParams, build_mlp
from pipeline.model.transform import AffineTransform
from tests.conftest import flat_digits

Splits = tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray], AffineTransform]


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Tiny nets run fastest on one thread, and the shared test machine has few cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def data() -> Splits:
    """Train (300) and dev (100) fixture digits and a transform that projects them to 32 features.

    A module that needs other splits defines its own `data`, which pytest prefers to this one.
    """
    train, dev = flat_digits(300, 1), flat_digits(100, 2)
    # A random projection to 32 features keeps the tiny nets fast and the classes apart.
    matrix = np.random.default_rng(0).normal(0, 1 / 2800, size=(784, 32)).astype(np.float32)
    transform = AffineTransform(mean=train[0].mean(axis=0).astype(np.float32), matrix=matrix)
    return train, dev, transform


def tiny_model(transform: AffineTransform, seed: int = 0, **model) -> MLP:
    """A one-hidden-layer (16 units, dropout 0.1 unless overridden) MLP seeded by `seed`."""
    torch.manual_seed(seed)
    return build_mlp(ModelParams(**{"hidden": (16,), "dropout": 0.1, **model}), transform)


def write_prepared(directory: Path, data: Splits) -> None:
    """The splits and transform as `digits prepare` writes them (train, dev, transform)."""
    train, dev, transform = data
    directory.mkdir(parents=True)
    np.savez(directory / "train.npz", x=train[0], y=train[1])
    np.savez(directory / "dev.npz", x=dev[0], y=dev[1])
    transform.save(directory / "transform.npz")


def diagnosed_run() -> dict:
    """What the train stage writes for a 2-epoch run of a 2-hidden-layer ReLU net."""
    rng = np.random.default_rng(0)

    def layer(dead: float | None) -> dict:
        counts, edges = np.histogram(rng.normal(size=100), bins=5)
        figures = {"grad_norm": 0.5, "weight_norm": 3.0, "update_ratio": 0.1}
        hist = {"edges": edges.tolist(), "counts": counts.tolist()}
        if dead is None:
            return {**figures, "histogram": hist}
        extra = {"act_mean": 0.4, "act_std": 0.6, "dead": dead, "saturated": None}
        return {**figures, **extra, "histogram": hist}

    epochs = [
        {
            "epoch": e,
            "loss": 1.0,
            "layers": {"blocks.0": layer(0.9), "blocks.1": layer(0.1), "head": layer(None)},
        }
        for e in (1, 2)
    ]
    finding = {
        "share": 0.5,
        "evidence": "50% of ReLU units dead on the dev batch at the last epoch",
        "remedy": ["a lower learning rate (train.lr)", "batchnorm (model.batchnorm: true)"],
    }
    pictures = {
        "first_layer": rng.normal(size=(3, 28, 28)).tolist(),
        "pca": rng.normal(size=(20, 2)).tolist(),
        "pca_labels": (np.arange(20) % 10).tolist(),
        "pca_variance": [0.3, 0.2],
    }
    train = {"diagnosis": {"verdict": "dead units", "findings": {"dead units": finding}}}
    return {"train": train, "diagnostics": epochs, "pictures": pictures}
