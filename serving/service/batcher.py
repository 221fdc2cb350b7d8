"""Adaptive batching for the service: prediction requests that arrive together share one model call.

Reads and writes nothing; records each model call's size in the digits_batch_size histogram. One
Batcher per worker, made by the service's __init__ (routes.Routes) around its ONNX session.
"""

from __future__ import annotations

import asyncio
from collections import deque

import numpy as np

from serving.service.prometheus import BATCH_SIZE
from serving.session import OnnxModel

Job = tuple[np.ndarray, asyncio.Future[np.ndarray]]


class Batcher:
    """Adaptive batching: requests that arrive together share one model call.

    The first request to find the model idle leads: it lets the requests already ready in this
    turn of the event loop join, then runs the batch in its own task and hands out the slices.
    Requests arriving while a batch forms ride along. No extra task, no timer: a lone request
    costs one pass of the event loop more than calling the model directly.
    """

    def __init__(self, model: OnnxModel, max_batch: int) -> None:
        self.model, self.max_batch = model, max_batch
        self.pending: deque[Job] = deque()
        self.leading = False

    async def __call__(self, X: np.ndarray) -> np.ndarray:
        """Float32 (N, PIXELS) -> probabilities (N, CLASSES), computed in a shared batch."""
        future = asyncio.get_running_loop().create_future()
        self.pending.append((X, future))
        if self.leading:
            return await future
        self.leading = True
        try:
            await asyncio.sleep(0)  # requests ready in this turn of the loop join the batch
        finally:  # even when the leader is cancelled: nobody is left waiting for a batch
            while self.pending:
                self.run(self.take())
            self.leading = False
        return await future

    def take(self) -> list[Job]:
        """The oldest live requests, at most max_batch rows in all (at least one if any)."""
        jobs: list[Job] = []
        rows = 0
        while self.pending and (not jobs or rows + len(self.pending[0][0]) <= self.max_batch):
            X, future = self.pending.popleft()
            if not future.done():  # a request cancelled while waiting costs no model time
                jobs.append((X, future))
                rows += len(X)
        return jobs

    def run(self, jobs: list[Job]) -> None:
        """Run the model once on the jobs' rows and hand each its slice (or the failure)."""
        if not jobs:
            return
        X = jobs[0][0] if len(jobs) == 1 else np.concatenate([x for x, _ in jobs])  # (ΣN, PIXELS)
        BATCH_SIZE.observe(len(X))
        try:
            # Inline, not in a thread: a thread hop per batch costs more than a small model.
            _, P = self.model.predict(X)
            results = np.split(P, np.cumsum([len(x) for x, _ in jobs])[:-1])
        except Exception as err:  # every waiting request gets the failure
            results = [err] * len(jobs)
        for (_, future), result in zip(jobs, results, strict=True):
            if future.done():  # the client went away
                continue
            if isinstance(result, Exception):
                future.set_exception(result)
            else:
                future.set_result(result)
