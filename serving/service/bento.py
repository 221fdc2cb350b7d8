"""BentoML service: digit prediction from JSON pixels or uploaded images, on ONNX Runtime.

Reads the ONNX model named by $DIGITS_MODEL (default models/digits.onnx) and its metadata; writes
nothing. Run: `bentoml serve serving.service.bento:Digits` or `digits serve`.
Settings (env, serving/settings.py): DIGITS_MODEL, DIGITS_PROVIDER (auto|cuda|cpu), DIGITS_THREADS
(1 per worker), DIGITS_WORKERS (1), DIGITS_MAX_IMAGES (1024 per request), DIGITS_MAX_BODY_BYTES
(16 MiB), DIGITS_MAX_IMAGE_PIXELS and DIGITS_MAX_REQUEST_PIXELS (4096×4096 each; over -> 400/413
from the image headers, before decoding), DIGITS_DECODE_THREADS (1: the pool that decodes images
and parses large JSON bodies), DIGITS_MAX_QUEUE (256 requests in flight per worker; past it ->
503 with Retry-After), DIGITS_TIMEOUT_S (30: not answered by then -> 504), DIGITS_JSON_LOGS,
DIGITS_ACCESS_LOG and DIGITS_TRACE (0).
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import bentoml
import numpy as np
import orjson
from bentoml.exceptions import BentoMLException
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from digits.images import ImageError, Prepared, image_pixels, load_image, prepare
from serving.answers import answer_rows, no_digit_reasons
from serving.service import openapi
from serving.service.bodies import (
    INLINE_BYTES,
    InputError,
    check_count,
    in_pool,
    read_images,
    read_pixels,
    to_pixels,
)
from serving.service.guards import Admission, BodyLimit, OpenAPIDocument
from serving.service.logs import log, log_refusal, use_json_logs
from serving.service.prometheus import BATCH_SIZE, DECODE_SECONDS, RequestMetrics, observe_answers
from serving.service.settings import Settings
from serving.session import ModelError, OnnxModel, load_model
from serving.verify import VerifyError, startup_check

__all__ = ["Batcher", "Digits", "InputError", "Settings", "to_pixels"]

STATIC = Path(__file__).parent / "static"
PREDICTION_ROUTES = ("/predict", "/predict_image")
POLL_S = 0.05  # how often a request waiting on image decoding checks that its client is still there
# Requests this small (a few digit-sized images) are decoded on the event loop, in well under 1 ms.
INLINE_PIXELS = 4 * 64 * 64
JSON = b"application/json"
current_service = bentoml.get_current_service  # looked up once: bentoml's lazy module attribute
FAILED = "An unexpected error has occurred, please check the server log."  # BentoML's words


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
    """Image bytes -> uint8 (28, 28) MNIST pixels or why there is no digit, timed for metrics."""
    start = time.perf_counter()
    try:
        prepared = prepare(load_image(data, max_image_pixels))
    except ImageError as err:
        raise ImageError(f"image {i}: {err}") from None
    DECODE_SECONDS.observe(time.perf_counter() - start)
    return prepared


def stacked(prepared: list[Prepared]) -> tuple[np.ndarray, list[str | None]]:
    """Prepared images -> float32 (N, 784) pixels and each one's reason for no digit."""
    X = np.stack([p.pixels for p in prepared]).reshape(len(prepared), 784).astype(np.float32)
    return X, [p.reason for p in prepared]


async def disconnected(request: Request) -> None:
    """Return once the client has gone away (never, for a request without a connection)."""
    try:
        while not await request.is_disconnected():
            await asyncio.sleep(POLL_S)
    except RuntimeError:  # a Request built in Python (the service called as a class)
        await asyncio.Event().wait()


class Batcher:
    """Adaptive batching: requests that arrive together share one model call.

    The first request to find the model idle leads: it lets the requests already ready in this
    turn of the event loop join, then runs the batch in its own task and hands out the slices.
    Requests arriving while a batch forms ride along. No extra task, no timer: a lone request
    costs one pass of the event loop more than calling the model directly.
    """

    def __init__(self, model: OnnxModel, max_batch: int) -> None:
        self.model, self.max_batch = model, max_batch
        self.pending: deque[tuple[np.ndarray, asyncio.Future[np.ndarray]]] = deque()
        self.leading = False

    async def __call__(self, X: np.ndarray) -> np.ndarray:
        """Float32 (N, 784) -> probabilities (N, 10), computed in a shared batch."""
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

    def take(self) -> list[tuple[np.ndarray, asyncio.Future[np.ndarray]]]:
        """The oldest live requests, at most max_batch rows in all (at least one if any)."""
        jobs: list[tuple[np.ndarray, asyncio.Future[np.ndarray]]] = []
        rows = 0
        while self.pending and (not jobs or rows + len(self.pending[0][0]) <= self.max_batch):
            X, future = self.pending.popleft()
            if not future.done():  # a request cancelled while waiting costs no model time
                jobs.append((X, future))
                rows += len(X)
        return jobs

    def run(self, jobs: list[tuple[np.ndarray, asyncio.Future[np.ndarray]]]) -> None:
        """Run the model once on the jobs' rows and hand each its slice (or the failure)."""
        if not jobs:
            return
        X = jobs[0][0] if len(jobs) == 1 else np.concatenate([x for x, _ in jobs])  # (sum N, 784)
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


def answer(P: np.ndarray, reasons: list[str | None], model: OnnxModel) -> dict[str, Any]:
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


def refuse(ctx: bentoml.Context, route: str, err: InputError | ImageError) -> dict[str, str]:
    """Answer a refused request: its status, one log line, the error in JSON."""
    status = getattr(err, "status", 400)
    ctx.response.status_code = status
    log_refusal(route, status, str(err))
    return {"error": str(err)}


async def page(_: Request) -> FileResponse:
    """GET /: the drawing page."""
    return FileResponse(STATIC / "index.html")


async def info(_: Request) -> JSONResponse:
    """GET /info: model metadata and the ONNX Runtime provider in use."""
    return JSONResponse(bentoml.get_current_service().info())


async def docs(_: Request) -> FileResponse:
    """GET /docs: Swagger UI of the OpenAPI document, which the drawing page displaces from /."""
    return FileResponse(STATIC / "docs.html")


# BentoML APIs are POST-only; the GET routes live in a small Starlette app mounted beside them.
PAGES = Starlette(routes=[Route("/", page), Route("/info", info), Route("/docs", docs)])
try:
    SETTINGS = Settings.from_env()
except ValueError as err:  # one line in the server's log, not a traceback through BentoML's import
    raise SystemExit(f"digits service: {err}") from None
# Image decoding and large JSON bodies: bounded, so a flood of them queues here, not in memory.
POOL = ThreadPoolExecutor(SETTINGS.decode_threads, thread_name_prefix="digits-decode")


class PixelsJSON(bentoml.IODescriptor):
    """/predict's input as BentoML's client and schema see it (PredictionRoutes parses HTTP)."""

    pixels: Any


class ImagesForm(bentoml.IODescriptor):
    """/predict_image's input: files, so BentoML's client sends them as multipart."""

    images: list[Path]


class AnswerJSON(bentoml.IODescriptor):
    """The answer of both prediction routes, serialized by orjson."""

    digits: list[int | None] = []
    # Rows of 10 floats, null for an image with no digit: BentoML's client reads a nullable
    # list as a list and fails on the null, so it is declared loosely here (openapi.py is exact).
    probabilities: list[Any] = []
    reasons: list[str | None] = []
    low_confidence: list[bool] = []
    model_version: str = ""
    error: str | None = None

    @classmethod
    async def to_http_response(cls, obj: Any, serde: Any) -> Response:
        """The answer dict as JSON, without a pydantic round trip."""
        return Response(orjson.dumps(obj), media_type="application/json")


def check_model_file(settings: Settings) -> str:
    """Verify the model against its golden vectors before BentoML starts any worker.

    Here, at import, a failure stops `bentoml serve` itself in one line; raised from a worker's
    __init__ it would only make BentoML restart the worker again and again.
    """
    path = Path(settings.model)
    if not path.is_file():
        return "unverified"  # the worker's load_model reports the missing file
    try:
        return startup_check(load_model(path, "cpu", 1), path)
    except (VerifyError, ModelError) as err:
        raise SystemExit(f"digits service: refusing {path}: {err}") from None


VERIFIED = check_model_file(SETTINGS)


@bentoml.asgi_app(PAGES, path="/")
@bentoml.service(
    name="digits",
    workers=SETTINGS.workers,
    traffic={"timeout": SETTINGS.timeout_s},
    http={"cors": {"enabled": False}},
    logging={"access": {"enabled": SETTINGS.access_log}},
    tracing={"excluded_urls": [] if SETTINGS.trace else ["/predict", "/predict_image"]},
)
class Digits:
    """Digit classifier: JSON pixels or images in, digits and probabilities out."""

    def __init__(self) -> None:
        self.settings = Settings.from_env()
        s = self.settings
        if s.json_logs:
            use_json_logs()
        self.model = load_model(s.model, s.provider, s.threads)
        self.verified = VERIFIED
        self.batch = Batcher(self.model, s.max_images)
        # Startup left ~1M long-lived objects (bentoml, pydantic, otel); without this every
        # full garbage collection walks them all, a 100+ ms pause in p99 latency.
        gc.freeze()
        # Requests leave little cyclic garbage, but BentoML's timeout middleware keeps a timer
        # and a future alive per request for its 30 s: at the default thresholds that meant
        # ~50 collections a second under load, and full ones of ~6 ms over those live objects.
        gc.set_threshold(10_000, 20, 10)

    # Over HTTP, PredictionRoutes answers both routes; these serve BentoML's client and Python.
    @bentoml.api(input_spec=PixelsJSON, output_spec=AnswerJSON)
    async def predict(self, pixels: Any, ctx: bentoml.Context) -> dict[str, Any]:
        """Classify N images given as N×784 or N×28×28 pixel values 0–255."""
        try:
            X = to_pixels(pixels, self.settings.max_images)
        except InputError as err:
            return refuse(ctx, "/predict", err)
        return answer(await self.batch(X), no_digit_reasons(X, None), self.model)

    @bentoml.api(input_spec=ImagesForm, output_spec=AnswerJSON)
    async def predict_image(self, images: list[Path], ctx: bentoml.Context) -> dict[str, Any]:
        """Classify uploaded PNG/JPEG images, each preprocessed the MNIST way."""
        try:
            files = [path.read_bytes() for path in images]
            check_count(len(files), self.settings.max_images)
            X, reasons = await self.decode(files, ctx.request)
        except (InputError, ImageError) as err:
            return refuse(ctx, "/predict_image", err)
        return answer(await self.batch(X), reasons, self.model)

    async def decode(
        self, images: list[bytes], request: Request
    ) -> tuple[np.ndarray, list[str | None]]:
        """Image bytes -> float32 (N, 784) and reasons for no digit; dropped if the client goes."""
        s, run = self.settings, in_pool(POOL)
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
                raise InputError("client went away while its images were decoded", 499)
            prepared = everything.result()
        finally:  # on refusal, timeout or disconnect: images not yet started are never decoded
            gone.cancel()
            for job in jobs:
                job.cancel()
        return stacked(prepared)

    def info(self) -> dict[str, Any]:
        """Model metadata and the ONNX Runtime provider in use."""
        return {
            "provider": self.model.provider,
            "verified": self.verified,
            "version": self.model.version,
            "confidence_threshold": str(self.model.threshold),  # in use: the model's or default
            "deskew": str(self.model.deskew).lower(),
            **self.model.metadata,
        }


class PredictionRoutes:
    """ASGI middleware that serves the prediction routes itself, before BentoML's request layers.

    The same parsing, decoding, batching, answers, refusals and metrics as Digits.predict and
    Digits.predict_image, which stay the routes' declarations (BentoML's client, calls in Python).
    BentoML's routing, context and IO-descriptor layers cost more CPU than a one-image request
    (README: load benchmark).
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path")
        if scope["type"] != "http" or path not in PREDICTION_ROUTES or scope["method"] != "POST":
            return await self.app(scope, receive, send)
        try:
            service = current_service()
        except BentoMLException:  # not instantiated yet: BentoML's route answers as it does then
            return await self.app(scope, receive, send)
        status, request = 200, Request(scope, receive)
        try:
            async with asyncio.timeout(SETTINGS.timeout_s):  # a client dripping its body
                if path == "/predict":
                    X = await read_pixels(request, SETTINGS.max_images, in_pool(POOL))
                    reasons = no_digit_reasons(X, None)
                else:
                    images = await read_images(request, SETTINGS.max_images)
                    X, reasons = await service.decode(images, request)
                result = answer(await service.batch(X), reasons, service.model)
        except (InputError, ImageError) as err:
            status, result = getattr(err, "status", 400), {"error": str(err)}
            log_refusal(path, status, str(err))
        except TimeoutError:
            status, result = 504, {"error": f"not answered within {SETTINGS.timeout_s} s"}
            log_refusal(path, status, result["error"])
        except Exception:  # as BentoML does: the traceback to the log, no internals to the client
            log.exception("failed %s", path)
            status, result = 500, {"error": FAILED}
        body = orjson.dumps(result)
        # The two messages Starlette's Response would send, without building one per request.
        headers = [(b"content-type", JSON), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def guarded(app: ASGIApp) -> ASGIApp:
    """Our layers around an app, outermost first: the document costs nothing, then request
    metrics, backpressure, the body limit, and the prediction routes."""
    app = BodyLimit(PredictionRoutes(app), max_bytes=SETTINGS.max_body_bytes)
    app = Admission(app, max_queue=SETTINGS.max_queue, paths=PREDICTION_ROUTES)
    app = RequestMetrics(app, paths=PREDICTION_ROUTES)
    return OpenAPIDocument(app, document=openapi.document(SETTINGS))


class InFront(bentoml.Service):
    """The service with our layers in front of BentoML's whole app, not among its middlewares.

    BentoML's outer middlewares (request metrics, OpenTelemetry's URL check, a task and a timer
    per request for its timeout) cost ~90 µs a request, about what the bare server spends on a
    whole one-image request (README: load benchmark). In front of them the prediction routes
    keep a timeout (asyncio.timeout, no task), metrics of their own (RequestMetrics) and no
    spans; every other route goes through BentoML's app as before.
    """

    __slots__ = ()

    def to_asgi(self, is_main: bool = True) -> ASGIApp:
        """BentoML's ASGI app (what `bentoml serve` runs in each worker), behind our layers."""
        return guarded(super().to_asgi(is_main))


if SETTINGS.access_log or SETTINGS.trace:
    # BentoML's access log and spans wrap its middlewares: the routes go inside them then.
    Digits.add_asgi_middleware(guarded)
else:
    Digits.__class__ = InFront  # same fields, one method more: nothing else of BentoML changes
