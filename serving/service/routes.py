"""The two prediction routes, implemented once: pixels or image files in, the JSON answer out.

Reads request bodies; writes nothing. `Routes` is one worker's routes (the model, its batcher, the
decoding pool), made by the service's __init__. Both ways in call it: `FastRoutes`, the ASGI
middleware bento.py adds with BentoML's `add_asgi_middleware`, answers HTTP requests before
BentoML's routing and IO descriptors (they cost more CPU than a one-image request); the
`@bentoml.api` methods serve BentoML's client schema and callers in Python.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import bentoml
import numpy as np
import orjson
from bentoml.exceptions import BentoMLException
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from digits.contract import PIXELS
from digits.images import ImageError, Prepared, image_pixels, load_image, prepare
from serving.answers import answer_rows, no_digit_reasons
from serving.service.batcher import Batcher
from serving.service.bodies import (
    GONE,
    INLINE_BYTES,
    InputError,
    check_count,
    in_pool,
    read_images,
    read_pixels,
    to_pixels,
)
from serving.service.logs import log, log_refusal
from serving.service.prometheus import DECODE_SECONDS, observe_answers
from serving.service.settings import Settings
from serving.session import OnnxModel

PREDICT, PREDICT_IMAGE = "/predict", "/predict_image"
PREDICTION_ROUTES = (PREDICT, PREDICT_IMAGE)
POLL_S = 0.05  # how often a request waiting on image decoding checks that its client is still there
# Requests this small (a few digit-sized images) are decoded on the event loop, in well under 1 ms.
INLINE_PIXELS = 4 * 64 * 64
JSON = b"application/json"
FAILED = "An unexpected error has occurred, please check the server log."  # BentoML's words
Answer = dict[str, Any]


def header_pixels(images: list[bytes], max_image_pixels: int) -> int:
    """Pixels in all images, read from their headers only; ImageError naming a bad image."""
    total = 0
    for i, data in enumerate(images):
        try:
            total += image_pixels(data, max_image_pixels)
        except ImageError as err:
            raise ImageError(f"image {i}: {err}") from None
    return total


def prepare_image(i: int, data: bytes, max_image_pixels: int) -> Prepared:
    """Image bytes -> uint8 (SIDE, SIDE) MNIST pixels or why there is no digit, timed."""
    start = time.perf_counter()
    try:
        prepared = prepare(load_image(data, max_image_pixels))
    except ImageError as err:
        raise ImageError(f"image {i}: {err}") from None
    DECODE_SECONDS.observe(time.perf_counter() - start)
    return prepared


def stacked(prepared: list[Prepared]) -> tuple[np.ndarray, list[str | None]]:
    """Prepared images -> float32 (N, PIXELS) pixels and each one's reason for no digit."""
    X = np.stack([p.pixels for p in prepared]).reshape(len(prepared), PIXELS).astype(np.float32)
    return X, [p.reason for p in prepared]


async def disconnected(request: Request) -> None:
    """Return once the client has gone away (never, for a request without a connection)."""
    try:
        while not await request.is_disconnected():
            await asyncio.sleep(POLL_S)
    except RuntimeError:  # a Request built in Python (the service called as a class)
        await asyncio.Event().wait()


def answer(P: np.ndarray, reasons: list[str | None], model: OnnxModel) -> Answer:
    """The JSON answer: digits and probabilities (null: no digit), reasons, low_confidence."""
    answers = answer_rows(P, reasons, model.threshold)
    observe_answers(answers)
    digits, probabilities = answers.digits.tolist(), P.tolist()
    if not answers.answered.all():  # rare: only then a pass in Python over the images
        for i in np.flatnonzero(~answers.answered).tolist():
            digits[i] = probabilities[i] = None
    return {
        "digits": digits,
        "probabilities": probabilities,
        "reasons": reasons,
        "low_confidence": answers.low.tolist(),
        "model_version": model.version,
    }


class Routes:
    """One worker's prediction routes: its model, batcher and image-decoding pool."""

    def __init__(self, model: OnnxModel, settings: Settings) -> None:
        self.model, self.settings = model, settings
        self.batch = Batcher(model, settings.max_images)
        # Image decoding and large JSON bodies: bounded, so a flood of them queues here.
        self.pool = ThreadPoolExecutor(settings.decode_threads, thread_name_prefix="digits-decode")
        self.run = in_pool(self.pool)

    async def predict(self, X: np.ndarray) -> Answer:
        """POST /predict: float32 (N, PIXELS) pixels -> the answer."""
        return answer(await self.batch(X), no_digit_reasons(X, None), self.model)

    async def predict_image(self, images: list[bytes], request: Request) -> Answer:
        """POST /predict_image: image files -> the answer (decoding stops if the client goes)."""
        check_count(len(images), self.settings.max_images)
        X, reasons = await self.decode(images, request)
        return answer(await self.batch(X), reasons, self.model)

    async def predict_value(self, pixels: Any) -> Answer:
        """/predict with its body already parsed (BentoML's IO descriptor did it)."""
        return await self.predict(to_pixels(pixels, self.settings.max_images))

    async def predict_files(self, images: list[Path], request: Request) -> Answer:
        """/predict_image with its files already saved (BentoML's IO descriptor did it)."""
        return await self.predict_image([path.read_bytes() for path in images], request)

    async def from_http(self, path: str, request: Request) -> Answer:
        """A prediction route's answer to an HTTP request whose body is still to read."""
        max_images = self.settings.max_images
        if path == PREDICT:
            return await self.predict(await read_pixels(request, max_images, self.run))
        return await self.predict_image(await read_images(request, max_images), request)

    async def respond(self, route: str, work: Coroutine[Any, Any, Answer]) -> tuple[int, Answer]:
        """Run a route: (200, its answer), or a refusal's, timeout's or failure's status and error.

        A refusal (4xx, or a client gone: 499) and a timeout (504) are one log line and a count
        in digits_refused_requests; an unexpected failure (500) logs its traceback.
        """
        try:
            async with asyncio.timeout(self.settings.timeout_s):  # a client dripping its body
                return 200, await work
        except (InputError, ImageError) as err:
            status, error = getattr(err, "status", 400), str(err)
        except TimeoutError:
            status, error = 504, f"not answered within {self.settings.timeout_s} s"
        except Exception:  # as BentoML does: the traceback to the log, no internals to the client
            log.exception("failed %s", route)
            return 500, {"error": FAILED}
        log_refusal(route, status, error)
        return status, {"error": error}

    async def decode(
        self, images: list[bytes], request: Request
    ) -> tuple[np.ndarray, list[str | None]]:
        """Images -> float32 (N, PIXELS) and reasons for no digit; dropped if the client goes."""
        s, run = self.settings, self.run
        small = sum(map(len, images)) <= INLINE_BYTES  # a few small files: headers read in µs
        total = header_pixels(images, s.max_image_pixels) if small else None
        if total is None:
            total = await run(header_pixels, images, s.max_image_pixels)
        if total > s.max_request_pixels:
            error = f"images too large: {total} pixels in all (limit {s.max_request_pixels})"
            raise InputError(error, 413)
        if small and total <= INLINE_PIXELS:  # a thread hop would cost more than the decoding
            return stacked([prepare_image(i, d, s.max_image_pixels) for i, d in enumerate(images)])
        jobs = [run(prepare_image, i, d, s.max_image_pixels) for i, d in enumerate(images)]
        everything, gone = asyncio.gather(*jobs), asyncio.ensure_future(disconnected(request))
        try:
            await asyncio.wait({everything, gone}, return_when=asyncio.FIRST_COMPLETED)
            if not everything.done():
                raise InputError("client went away while its images were decoded", GONE)
            prepared = everything.result()
        finally:  # on refusal, timeout or disconnect: images not yet started are never decoded
            gone.cancel()
            for job in jobs:
                job.cancel()
        return stacked(prepared)

    def close(self) -> None:
        """Stop the decoding pool; images not yet started are dropped."""
        self.pool.shutdown(wait=False, cancel_futures=True)


class FastRoutes:
    """ASGI middleware that answers POST /predict and /predict_image with the worker's Routes.

    The service instance (and its Routes) comes from `bentoml.get_current_service()`, as
    BentoML's docs have mounted ASGI apps reach it; before BentoML has made it, requests pass on.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.routes: Routes | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path")
        if scope["type"] != "http" or path not in PREDICTION_ROUTES or scope["method"] != "POST":
            return await self.app(scope, receive, send)
        if (routes := self.routes or self.find_routes()) is None:
            return await self.app(scope, receive, send)
        work = routes.from_http(path, Request(scope, receive))
        status, result = await routes.respond(path, work)
        body = orjson.dumps(result)
        # The two messages Starlette's Response would send, without building one per request.
        headers = [(b"content-type", JSON), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    def find_routes(self) -> Routes | None:
        """The worker's Routes, once BentoML has made the service instance."""
        try:
            self.routes = bentoml.get_current_service().routes
        except BentoMLException:
            return None
        return self.routes
