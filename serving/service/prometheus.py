"""Prometheus metrics for operations, served on BentoML's /metrics beside its own.

Registered with prometheus_client at import, as BentoML documents for custom metrics (it merges
every worker's values). What a person watching for drift or overload needs: answers per digit
(and "no digit" answers), the confidence of each answer and how many fall under the threshold,
image decode time, the model's batch sizes, refused requests by route and status, and the
prediction routes' requests by status and their latency (BentoML's own request metrics count them
too, by status code only; ours name the route our layers answered and include their refusals).
"""

from __future__ import annotations

import time

import numpy as np
from prometheus_client import Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from digits.contract import CLASSES, LABELS
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
REQUESTS = Counter(
    "digits_requests", "Prediction requests answered, by route and status", ["route", "status"]
)
LATENCY = Histogram(
    "digits_request_seconds",
    "Time from a prediction request's arrival to its answer, by route",
    ["route"],
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0),
)
DIGITS = [PREDICTIONS.labels(digit=str(d)) for d in LABELS]  # label lookups once, not per answer
# Exported at 0 from the start, so dashboards and alerts can rely on the series.
NO_DIGIT = PREDICTIONS.labels(digit="none")


def observe_answers(answers: Answers) -> None:
    """Count each image's digit (or none) and record the confidence of each answered one."""
    answered = answers.answered
    counts = np.bincount(answers.digits[answered], minlength=CLASSES)  # (10,)
    for digit in np.flatnonzero(counts).tolist():
        DIGITS[digit].inc(int(counts[digit]))
    if missing := len(answered) - int(counts.sum()):
        NO_DIGIT.inc(missing)
    if low := int(answers.low.sum()):
        LOW_CONFIDENCE.inc(low)
    for value in answers.confidence[answered].tolist():
        CONFIDENCE.observe(value)


class RequestMetrics:
    """Count the prediction routes' requests by status and time them, refusals included."""

    def __init__(self, app: ASGIApp, paths: tuple[str, ...]) -> None:
        self.app = app
        self.latency = {path: LATENCY.labels(route=path) for path in paths}
        self.counts: dict[tuple[str, int], Counter] = {}  # label lookups once per status

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        latency = self.latency.get(scope["path"]) if scope["type"] == "http" else None
        if latency is None:
            return await self.app(scope, receive, send)
        start, status = time.perf_counter(), 500  # an app that raises sends nothing: a 500

        async def sent(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sent)
        finally:
            latency.observe(time.perf_counter() - start)
            key = (scope["path"], status)
            if (count := self.counts.get(key)) is None:
                count = self.counts[key] = REQUESTS.labels(route=key[0], status=str(status))
            count.inc()
