"""Classification metrics on numpy arrays: computed here once and reused by every stage."""

from __future__ import annotations

import numpy as np


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax, numerically stable: (N, C) -> (N, C)."""
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def accuracy(logits: np.ndarray, y: np.ndarray) -> float:
    """Share of rows whose argmax equals the label."""
    return float((logits.argmax(axis=1) == y).mean()) if len(y) else float("nan")


def cross_entropy(logits: np.ndarray, y: np.ndarray) -> float:
    """Mean softmax cross-entropy (natural log) of logits (N, C) against labels (N,)."""
    z = logits.astype(np.float64) - logits.max(axis=1, keepdims=True)
    log_norm = np.log(np.exp(z).sum(axis=1))  # (N,)
    return float((log_norm - z[np.arange(len(y)), y]).mean())
