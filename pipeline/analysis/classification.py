"""Classification metrics on numpy arrays: computed here once and reused by every stage."""

from __future__ import annotations

import numpy as np

from digits.confusion import confusion_counts

# Low confidence by default: answers below the threshold are right at most 6 times in 10 on dev.
FLAG_ACCURACY = 0.6


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


def error(logits: np.ndarray, y: np.ndarray) -> float:
    """Share of rows whose argmax differs from the label: 1 - accuracy."""
    return 1.0 - accuracy(logits, y)


def per_class_scores(confusion: np.ndarray) -> dict[str, list[float]]:
    """Precision, recall, F1 and support per class from a confusion matrix (0 where undefined)."""
    C = confusion.astype(np.float64)
    hits = np.diag(C)
    predicted, actual = C.sum(axis=0), C.sum(axis=1)  # column and row totals
    precision = np.divide(hits, predicted, out=np.zeros_like(hits), where=predicted > 0)
    recall = np.divide(hits, actual, out=np.zeros_like(hits), where=actual > 0)
    total = precision + recall
    f1 = np.divide(2 * precision * recall, total, out=np.zeros_like(hits), where=total > 0)
    return {
        "precision": precision.tolist(),
        "recall": recall.tolist(),
        "f1": f1.tolist(),
        "support": actual.astype(int).tolist(),
    }


def reliability(probs: np.ndarray, y: np.ndarray, bins: int = 15) -> dict[str, list]:
    """Reliability-diagram data per confidence bin [lo, hi): count, mean confidence, accuracy."""
    confidence = probs.max(axis=1)  # (N,)
    correct = probs.argmax(axis=1) == y  # (N,)
    index = np.minimum((confidence * bins).astype(np.int64), bins - 1)  # confidence 1.0: last bin
    count = np.bincount(index, minlength=bins)
    conf_sum = np.bincount(index, weights=confidence, minlength=bins)
    hit_sum = np.bincount(index, weights=correct, minlength=bins)
    # Empty bins have no mean; None keeps the JSON valid where NaN would not be.
    return {
        "lower": (np.arange(bins) / bins).tolist(),
        "upper": (np.arange(1, bins + 1) / bins).tolist(),
        "count": count.tolist(),
        "confidence": [float(s / n) if n else None for s, n in zip(conf_sum, count, strict=True)],
        "accuracy": [float(s / n) if n else None for s, n in zip(hit_sum, count, strict=True)],
    }


def expected_calibration_error(curve: dict[str, list]) -> float:
    """ECE: the count-weighted mean |accuracy - confidence| over the non-empty bins."""
    pairs = zip(curve["count"], curve["accuracy"], curve["confidence"], strict=True)
    total = sum(curve["count"])
    weighted = sum(n * abs(acc - conf) for n, acc, conf in pairs if n)
    return weighted / total if total else float("nan")


def confident_errors(probs: np.ndarray, y: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k wrong predictions with the highest confidence, most confident first."""
    predicted = probs.argmax(axis=1)
    wrong = np.flatnonzero(predicted != y)
    confidence = probs[wrong, predicted[wrong]]
    order = np.argsort(-confidence, kind="stable")
    return wrong[order[:k]]


def low_confidence_threshold(probs: np.ndarray, y: np.ndarray, max_accuracy: float) -> float:
    """The confidence below which answers are right at most `max_accuracy` of the time.

    Ranks answers by confidence and takes the largest set of least confident ones whose
    accuracy is at most `max_accuracy`; the threshold sits between that set and the next
    answer, so `confidence < threshold` flags exactly the set. 0.0 (flag nothing) when no
    such set exists.
    """
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == y
    order = np.argsort(confidence, kind="stable")
    ranked = confidence[order]
    hits = np.cumsum(correct[order])
    fits = np.flatnonzero(hits <= max_accuracy * np.arange(1, len(y) + 1))
    if not fits.size:
        return 0.0
    last = fits[-1]
    if last + 1 == len(y):
        return float(np.nextafter(ranked[last], np.inf))
    return float((ranked[last] + ranked[last + 1]) / 2)


def flagged_figures(probs: np.ndarray, y: np.ndarray, threshold: float) -> dict[str, float]:
    """Share of answers below `threshold`, and the accuracy of flagged and unflagged answers."""
    flagged = probs.max(axis=1) < threshold
    correct = probs.argmax(axis=1) == y
    return {
        "flagged_share": float(flagged.mean()) if len(y) else float("nan"),
        "flagged_accuracy": float(correct[flagged].mean()) if flagged.any() else float("nan"),
        "unflagged_accuracy": float(correct[~flagged].mean()) if (~flagged).any() else float("nan"),
    }


def summarize(logits: np.ndarray, y: np.ndarray, bins: int = 15) -> dict:
    """Every figure of one model on one split: accuracy, loss, per-class scores, calibration."""
    probs = softmax(logits.astype(np.float64))
    confusion = confusion_counts(y, logits.argmax(axis=1), logits.shape[1])
    scores = per_class_scores(confusion)
    curve = reliability(probs, y, bins)
    return {
        "accuracy": accuracy(logits, y),
        "error": error(logits, y),
        "loss": cross_entropy(logits, y),
        "macro_f1": float(np.mean(scores["f1"])),
        "ece": expected_calibration_error(curve),
        "per_class": scores,
        "confusion": confusion.tolist(),
        "reliability": curve,
    }
