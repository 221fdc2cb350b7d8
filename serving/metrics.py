"""Prometheus metrics for operations, served on BentoML's /metrics beside its own.

Registered with prometheus_client at import, as BentoML documents for custom metrics (it merges
every worker's values). What a person watching for drift or overload needs: answers per digit
(and "no digit" answers), the confidence of each answer and how many fall under the threshold,
image decode time, the model's batch sizes, and refused requests by route and status.
"""

from __future__ import annotations

import numpy as np
from prometheus_client import Counter, Histogram

from serving.answers import Answers

PREDICTIONS = Counter(
    "digits_predictions", "Images answered, by predicted digit ('none': no digit)", ["digit"]
)
CONFIDENCE = Histogram(
    "digits_confidence",
    "Probability of the predicted digit, per image (a falling median suggests drift)",
    buckets=(0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0),
)
DECODE_SECONDS = Histogram(
    "digits_image_decode_seconds",
    "Time to decode and prepare one uploaded image",
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0),
)
BATCH_SIZE = Histogram(
    "digits_batch_size",
    "Images per model call (requests arriving together share one call)",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024),
)
REFUSED = Counter(
    "digits_refused_requests", "Requests refused, by route and status", ["route", "status"]
)
LOW_CONFIDENCE = Counter(
    "digits_low_confidence_answers", "Digits answered under the model's confidence threshold"
)
DIGITS = [PREDICTIONS.labels(digit=str(d)) for d in range(10)]  # label lookups once, not per answer
# Exported at 0 from the start, so dashboards and alerts can rely on the series.
NO_DIGIT = PREDICTIONS.labels(digit="none")


def observe_answers(answers: Answers) -> None:
    """Count each image's digit (or none) and record the confidence of each answered one."""
    answered = answers.answered
    counts = np.bincount(answers.digits[answered], minlength=10)  # (10,)
    for digit in np.flatnonzero(counts).tolist():
        DIGITS[digit].inc(int(counts[digit]))
    if missing := len(answered) - int(counts.sum()):
        NO_DIGIT.inc(missing)
    if low := int(answers.low.sum()):
        LOW_CONFIDENCE.inc(low)
    for value in answers.confidence[answered].tolist():
        CONFIDENCE.observe(value)
