"""Golden vectors: a model file's proof, a few inputs with the outputs the model must give.

Like the ONNX model zoo's test_data_set, but one .npz beside the model: `digits.onnx` ->
`digits.golden.npz` holding `pixels` (N, 784) float32, `logits` and `probabilities` (N, 10)
float32, and `model_version` (the metadata version they were made with). The export stage
writes them; `digits verify` and the service check a model against them. Pure numpy.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from digits.atomic import write_npz
from digits.contract import CLASSES, GOLDEN_ARRAYS, GOLDEN_VERSION, PIXELS
from digits.errors import DataError
from digits.npz import read_npz


@dataclass(frozen=True)
class Golden:
    """Inputs and the outputs a model must give for them."""

    pixels: np.ndarray
    logits: np.ndarray
    probabilities: np.ndarray
    model_version: str


def golden_path(model: Path) -> Path:
    """Where a model's golden vectors live: beside it, same stem."""
    return model.with_name(f"{model.stem}.golden.npz")


def write_golden(path: Path, golden: Golden) -> None:
    """Write golden vectors atomically."""
    arrays = {key: np.asarray(getattr(golden, key), np.float32) for key in GOLDEN_ARRAYS}
    write_npz(path, **arrays, **{GOLDEN_VERSION: np.array(golden.model_version)})


def read_golden(path: Path) -> Golden:
    """Read golden vectors, refusing a file that lacks a key (DataError naming the file)."""
    pixels, logits, probabilities, version = read_npz(path, *GOLDEN_ARRAYS, GOLDEN_VERSION)
    n = len(pixels)
    outputs = (n, CLASSES)
    if pixels.shape != (n, PIXELS) or logits.shape != outputs or probabilities.shape != outputs:
        shapes = f"{pixels.shape}, {logits.shape}, {probabilities.shape}"
        raise DataError(
            f"{path}: golden vectors must be N×{PIXELS} -> N×{CLASSES}, N×{CLASSES}; got {shapes}"
        )
    return Golden(pixels, logits, probabilities, str(version))
