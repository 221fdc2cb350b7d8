"""Per-image answers from probabilities: a digit, or none and why; low confidence flagged.

The service (serving/service/routes.py) and `digits score` (both engines of serving/scoring/)
answer alike through this module. An image with no digit in it (the image path's reason, or a
row of pixels all one colour) is answered with no digit and its reason; an answered digit whose
probability is under the model's confidence threshold is flagged. Reads and writes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from digits.images import blank_rows
from digits.ink import BLANK


@dataclass(frozen=True)
class Answers:
    """One answer per image, as arrays: what the routes and the scorer's rows are built from."""

    digits: np.ndarray  # (N,) int64, the most probable digit (meaningless where not answered)
    confidence: np.ndarray  # (N,) float32, its probability
    answered: np.ndarray  # (N,) bool: False where the image holds no digit
    reasons: list[str | None]  # why an image holds no digit; None where answered
    low: np.ndarray  # (N,) bool: answered with a confidence under the threshold


def no_digit_reasons(pixels: np.ndarray, given: list[str | None] | None) -> list[str | None]:
    """Each row's reason for no digit: the image path's if given, else BLANK for one-colour rows."""
    blank = blank_rows(pixels)
    if given is None and not blank.any():  # the common case, decided in one vectorized pass
        return [None] * len(pixels)
    given = given or [None] * len(pixels)
    return [r if r is not None else BLANK if b else None for r, b in zip(given, blank, strict=True)]


def answer_rows(P: np.ndarray, reasons: list[str | None], threshold: float) -> Answers:
    """Probabilities (N, 10) and each image's reason for no digit -> the answers."""
    answered = np.fromiter((r is None for r in reasons), bool, len(reasons))
    confidence = P.max(axis=1)
    low = answered & (confidence < threshold)
    return Answers(P.argmax(axis=1), confidence, answered, reasons, low)
