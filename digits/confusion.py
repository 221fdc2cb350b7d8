"""Confusion counts, the one tally behind evaluate's per-class scores and `digits score`'s summary.

Pure numpy; reads and writes nothing.
"""

from __future__ import annotations

import numpy as np


def confusion_counts(y: np.ndarray, predicted: np.ndarray, classes: int = 10) -> np.ndarray:
    """Counts (C, C) int64: row = actual class, column = predicted class."""
    y, predicted = np.asarray(y, np.int64), np.asarray(predicted, np.int64)
    for name, values in (("labels", y), ("predictions", predicted)):
        if values.size and (values.min() < 0 or values.max() >= classes):
            found = f"{values.min()}…{values.max()}"
            raise ValueError(f"{name} must be classes 0–{classes - 1}, found {found}")
    return np.bincount(y * classes + predicted, minlength=classes * classes).reshape(
        classes, classes
    )
