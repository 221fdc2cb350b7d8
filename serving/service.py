"""BentoML service: digit prediction from JSON pixels or uploaded images, on ONNX Runtime.

Reads the ONNX model named by $DIGITS_MODEL (default models/digits.onnx) and its metadata; writes
nothing. Run: `bentoml serve serving.service:Digits` or `digits serve` (sets the env vars below).
Settings (env): DIGITS_MODEL, DIGITS_PROVIDER (auto|cuda|cpu), DIGITS_THREADS (1 per worker),
DIGITS_WORKERS (1), DIGITS_MAX_IMAGES (1024 per request), DIGITS_MAX_BODY_BYTES (16 MiB, beyond
-> 413), DIGITS_ACCESS_LOG and DIGITS_TRACE (0; 1 turns on the access log / tracing spans).
"""

from __future__ import annotations

import asyncio
import gc
from collections import deque
from http import HTTPStatus
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
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from digits.images import ImageError, load_image, pixel_problem, to_mnist
from serving.session import ModelError, OnnxModel, load_model
from serving.settings import Settings
from serving.verify import VerifyError, startup_check

STATIC = Path(__file__).parent / "static"


class InputError(ValueError):
    """A request the service refuses; `status` is the HTTP code to answer with."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def check_count(n: int, max_images: int) -> None:
    """Refuse empty batches and batches over the per-request limit."""
    if n == 0:
        raise InputError("empty batch: send at least one image")
    if n > max_images:
        raise InputError(f"too many images: {n} (limit {max_images} per request)", 413)


def to_pixels(value: Any, max_images: int) -> np.ndarray:
    """JSON pixels (N×784 or N×28×28 numbers 0–255) -> float32 (N, 784), or InputError."""
    try:
        X = np.asarray(value)
    except ValueError:
        raise InputError("pixels must be a rectangular array (rows of equal length)") from None
    if X.dtype.kind not in "iuf":
        raise InputError("pixels must be numbers (not strings, nulls, booleans or objects)")
    if X.ndim and len(X) == 0:
        raise InputError("empty batch: send at least one image")
    if X.shape[1:] not in ((784,), (28, 28)):
        raise InputError(f"pixels must have shape N×784 or N×28×28, got {list(X.shape)}")
    check_count(len(X), max_images)
    if problem := pixel_problem(X):
        raise InputError(problem)
    return X.reshape(len(X), 784).astype(np.float32)


def images_to_pixels(paths: list[Path]) -> np.ndarray:
    """Image files -> float32 (N, 784) MNIST-style pixels, or ImageError."""
    digits = [to_mnist(load_image(path.read_bytes())) for path in paths]  # each (28, 28)
    return np.stack(digits).reshape(len(paths), 784).astype(np.float32)


class Batcher:
    """Adaptive batching: requests that arrive while the model runs go into its next call."""

    def __init__(self, model: OnnxModel, max_batch: int) -> None:
        self.model, self.max_batch = model, max_batch
        self.pending: deque[tuple[np.ndarray, asyncio.Future[np.ndarray]]] = deque()
        self.loop: asyncio.AbstractEventLoop | None = None

    async def __call__(self, X: np.ndarray) -> np.ndarray:
        """Float32 (N, 784) -> probabilities (N, 10), computed in a shared batch."""
        loop = asyncio.get_running_loop()
        if self.loop is not loop:  # the event and its consumer task belong to one event loop
            self.loop, self.ready = loop, asyncio.Event()
            self.task = loop.create_task(self.run(self.ready))
        future = loop.create_future()
        self.pending.append((X, future))
        self.ready.set()
        return await future

    def take(self) -> list[tuple[np.ndarray, asyncio.Future[np.ndarray]]]:
        """The oldest pending requests, at least one, at most max_batch rows in all."""
        jobs = [self.pending.popleft()]
        rows = len(jobs[0][0])
        while self.pending and rows + len(self.pending[0][0]) <= self.max_batch:
            jobs.append(self.pending.popleft())
            rows += len(jobs[-1][0])
        return jobs

    async def run(self, ready: asyncio.Event) -> None:
        """Run the model on each batch of pending requests and hand out the slices."""
        while True:
            await ready.wait()
            jobs = self.take()
            if not self.pending:
                ready.clear()
            X = np.concatenate([x for x, _ in jobs])  # (sum N, 784)
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


class BodyLimit:
    """ASGI middleware: answer 413 with a JSON error to bodies over the limit, before parsing."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope["headers"]).get(b"content-length", b"0")
        if not length.isdigit() or int(length) > self.max_bytes:
            return await self.too_large(scope, receive, send)
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:  # a chunked body gives no length up front
                error = f"request body too large (limit {self.max_bytes} bytes)"
                raise BentoMLException(error, error_code=HTTPStatus.REQUEST_ENTITY_TOO_LARGE)
            return message

        await self.app(scope, counted, send)

    async def too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Send the 413 answer."""
        error = f"request body too large (limit {self.max_bytes} bytes)"
        await JSONResponse({"error": error}, status_code=413)(scope, receive, send)


def answer(P: np.ndarray, version: str) -> dict[str, Any]:
    """The JSON answer: each digit, its probability vector, the model version."""
    return {
        "digits": P.argmax(axis=1).tolist(),
        "probabilities": P.tolist(),
        "model_version": version,
    }


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


class PixelsJSON(bentoml.IODescriptor):
    """/predict's input: the body parsed by orjson, pixels left for numpy to check."""

    pixels: Any

    @classmethod
    async def from_http_request(cls, request: Request, serde: Any) -> PixelsJSON:
        """Parse the raw body; fall back to BentoML's parser (and its 400) when it is unusual."""
        try:
            body = orjson.loads(await request.body())
            return cls.model_construct(pixels=body["pixels"])
        except (orjson.JSONDecodeError, TypeError, KeyError):
            return await super().from_http_request(request, serde)


class AnswerJSON(bentoml.IODescriptor):
    """The answer of both prediction routes, serialized by orjson."""

    digits: list[int] = []
    probabilities: list[list[float]] = []
    model_version: str = ""
    error: str | None = None

    @classmethod
    async def to_http_response(cls, obj: Any, serde: Any) -> Response:
        """The answer dict as JSON, without a pydantic round trip."""
        return Response(orjson.dumps(obj), media_type="application/json")


# BentoML's per-request pydantic validation and serialization cost more CPU than the model.
PREDICT = {"input_spec": PixelsJSON, "output_spec": AnswerJSON}
try:
    SETTINGS = Settings.from_env()
except ValueError as err:  # one line in the server's log, not a traceback through BentoML's import
    raise SystemExit(f"digits service: {err}") from None


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
    traffic={"timeout": 30},
    http={"cors": {"enabled": False}},
    logging={"access": {"enabled": SETTINGS.access_log}},
    tracing={"excluded_urls": [] if SETTINGS.trace else ["/predict", "/predict_image"]},
)
class Digits:
    """Digit classifier: JSON pixels or images in, digits and probabilities out."""

    def __init__(self) -> None:
        self.settings = Settings.from_env()
        s = self.settings
        self.model = load_model(s.model, s.provider, s.threads)
        self.verified = VERIFIED
        self.batch = Batcher(self.model, s.max_images)
        # Startup left ~1M long-lived objects (bentoml, pydantic, otel); without this every
        # full garbage collection walks them all, a 100+ ms pause in p99 latency.
        gc.freeze()

    @bentoml.api(**PREDICT)
    async def predict(self, pixels: Any, ctx: bentoml.Context) -> dict[str, Any]:
        """Classify N images given as N×784 or N×28×28 pixel values 0–255."""
        try:
            X = to_pixels(pixels, self.settings.max_images)
        except InputError as err:
            ctx.response.status_code = err.status
            return {"error": str(err)}
        return answer(await self.batch(X), self.model.version)

    @bentoml.api(output_spec=AnswerJSON)
    async def predict_image(self, images: list[Path], ctx: bentoml.Context) -> dict[str, Any]:
        """Classify uploaded PNG/JPEG images, each preprocessed the MNIST way."""
        try:
            check_count(len(images), self.settings.max_images)
            # Decoding a large image takes a while: keep the event loop serving meanwhile.
            X = await asyncio.to_thread(images_to_pixels, images)
        except (InputError, ImageError) as err:
            ctx.response.status_code = getattr(err, "status", 400)
            return {"error": str(err)}
        return answer(await self.batch(X), self.model.version)

    def info(self) -> dict[str, Any]:
        """Model metadata and the ONNX Runtime provider in use."""
        return {
            "provider": self.model.provider,
            "verified": self.verified,
            "version": self.model.version,
            **self.model.metadata,
        }


Digits.add_asgi_middleware(BodyLimit, max_bytes=SETTINGS.max_body_bytes)
