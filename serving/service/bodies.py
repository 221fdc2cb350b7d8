"""Request bodies -> model inputs: JSON pixels to a float32 array, a multipart form to image bytes.

Reads the HTTP request body (already capped by guards.BodyLimit); writes nothing. Every way a
body can be wrong becomes an InputError carrying the HTTP status and a message in our own
words, so the service answers it as a 4xx instead of letting a library raise.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any

import numpy as np
import orjson
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, MultipartState, parse_options_header
from starlette.requests import ClientDisconnect, Request

from digits.contract import PIXELS, SIDE
from digits.images import pixel_problem

# python-multipart warns about each malformed body; our own refusal line already names it.
logging.getLogger("python_multipart").setLevel(logging.ERROR)
FIELD = "images"  # /predict_image's multipart field
# JSON bodies up to this size parse on the event loop: for them a thread hop costs more.
INLINE_BYTES = 64 * 1024
# nginx's "client closed request": nobody reads this answer, but the log and the metrics do.
GONE = 499
LEFT_MID_BODY = "client went away before sending its whole body"
SHAPES = ((PIXELS,), (SIDE, SIDE))


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


def has_bool(rows: list) -> bool:
    """Whether any pixel in nested lists is a JSON boolean (numpy would read it as 0 or 1)."""
    stack = [rows]
    while stack:
        for value in stack.pop():
            if isinstance(value, list):
                stack.append(value)
            elif isinstance(value, bool):
                return True
    return False


def to_pixels(value: Any, max_images: int) -> np.ndarray:
    """JSON pixels (N×PIXELS or N×SIDE×SIDE numbers 0–255) -> float32 (N, PIXELS), or InputError."""
    try:
        X = np.asarray(value)
    except ValueError:
        raise InputError("pixels must be a rectangular array (rows of equal length)") from None
    if X.dtype.kind not in "iuf":
        raise InputError("pixels must be numbers (not strings, nulls, booleans or objects)")
    if X.ndim and len(X) == 0:
        raise InputError("empty batch: send at least one image")
    if X.shape[1:] not in SHAPES:
        error = f"pixels must have shape N×{PIXELS} or N×{SIDE}×{SIDE}, got {list(X.shape)}"
        raise InputError(error)
    check_count(len(X), max_images)
    if problem := pixel_problem(X):
        raise InputError(problem)
    return X.reshape(len(X), PIXELS).astype(np.float32)


def parse_pixels(body: bytes, max_images: int) -> np.ndarray:
    """A /predict body -> float32 (N, PIXELS) pixels, or InputError naming what is wrong."""
    if not body.strip():
        raise InputError(f'empty body: send JSON {{"pixels": [[{PIXELS} numbers 0–255], ...]}}')
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as err:
        # Python's json writes NaN and Infinity, which JSON lacks; 1e999 overflows a double.
        if b"NaN" in body or b"Infinity" in body or "infinity" in str(err):
            error = f"malformed JSON ({err}): pixels must be finite numbers 0–255"
            raise InputError(error) from None
        raise InputError(f"malformed JSON ({err})") from None
    if not isinstance(document, dict) or "pixels" not in document:
        raise InputError('the body must be a JSON object with a "pixels" field')
    pixels = document["pixels"]
    # A boolean among numbers reads as 0/1 in numpy; the byte scan keeps the walk off the fast path.
    if (b"true" in body or b"false" in body) and isinstance(pixels, list) and has_bool(pixels):
        raise InputError("pixels must be numbers (not strings, nulls, booleans or objects)")
    return to_pixels(pixels, max_images)


def check_media_type(request: Request, expected: str, hint: str) -> None:
    """Refuse a body whose Content-Type is not the route's (415), naming the right one."""
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type != expected:
        got = f"Content-Type {media_type!r}" if media_type else "no Content-Type"
        raise InputError(f"unsupported media type: {got}; {hint}", 415)


async def read_pixels(
    request: Request, max_images: int, run: Callable[..., asyncio.Future[np.ndarray]]
) -> np.ndarray:
    """The pixels of a /predict request; large bodies are parsed by `run` (a pool), off the loop."""
    check_media_type(request, "application/json", "send JSON with Content-Type: application/json")
    try:
        body = await request.body()
    except ClientDisconnect:
        raise InputError(LEFT_MID_BODY, GONE) from None
    if len(body) <= INLINE_BYTES:
        return parse_pixels(body, max_images)
    return await run(parse_pixels, body, max_images)


class FormReader:
    """python-multipart callbacks that keep each part's name, filename flag and bytes in memory.

    In memory, not spooled to temp files like Starlette's form(): BodyLimit caps the whole body.
    Every part of the images field is a file, with or without a filename (RFC 7578 allows both).
    """

    def __init__(self, max_parts: int) -> None:
        self.max_parts = max_parts
        self.parts: list[tuple[bytes, bytes]] = []  # (Content-Disposition, data)
        self.header, self.value = b"", b""
        self.disposition, self.data = b"", bytearray()

    def callbacks(self) -> dict[str, Callable[..., None]]:
        """The callbacks MultipartParser calls as it reads."""
        return {
            "on_part_begin": self.begin,
            "on_header_field": lambda data, start, end: self.add("header", data[start:end]),
            "on_header_value": lambda data, start, end: self.add("value", data[start:end]),
            "on_header_end": self.header_end,
            "on_part_data": lambda data, start, end: self.data.extend(data[start:end]),
            "on_part_end": self.end,
        }

    def add(self, name: str, chunk: bytes) -> None:
        """Append a piece of the current header's name or value."""
        setattr(self, name, getattr(self, name) + chunk)

    def begin(self) -> None:
        """A new part; refuse one over the image limit before reading its bytes."""
        if len(self.parts) >= self.max_parts:
            raise InputError(f"too many images: over {self.max_parts} per request", 413)
        self.disposition, self.data = b"", bytearray()

    def header_end(self) -> None:
        """Keep the part's Content-Disposition; its other headers do not matter."""
        if self.header.lower() == b"content-disposition":
            self.disposition = self.value
        self.header, self.value = b"", b""

    def end(self) -> None:
        """The part is complete."""
        self.parts.append((self.disposition, bytes(self.data)))


async def read_images(request: Request, max_images: int) -> list[bytes]:
    """The image files of a /predict_image request, as bytes, or InputError."""
    hint = f"upload the images as multipart/form-data files in the field {FIELD!r}"
    check_media_type(request, "multipart/form-data", hint)
    _, params = parse_options_header(request.headers["content-type"])
    if not params.get(b"boundary"):
        raise InputError(f"multipart body without a boundary in its Content-Type: {hint}")
    reader = FormReader(max_images)
    parser = MultipartParser(params[b"boundary"], reader.callbacks())
    try:
        async for chunk in request.stream():
            parser.write(chunk)
        parser.finalize()
    except MultipartParseError as err:
        raise InputError(f"malformed multipart body ({err})") from None
    except ClientDisconnect:
        raise InputError(LEFT_MID_BODY, GONE) from None
    if parser.state != MultipartState.END:
        raise InputError("malformed multipart body (it ends before its closing boundary)")
    images = []
    for disposition, data in reader.parts:
        name = parse_options_header(disposition)[1].get(b"name")
        if name != FIELD.encode():
            field = "a part without a name" if name is None else f"field {name.decode('latin-1')!r}"
            raise InputError(f"unexpected {field}: {hint}")
        images.append(data)
    check_count(len(images), max_images)
    return images


def in_pool(pool: Executor) -> Callable[..., asyncio.Future[Any]]:
    """A function that runs `func(*args)` in the pool and returns an awaitable of its result."""

    def run(func: Callable[..., Any], *args: Any) -> asyncio.Future[Any]:
        return asyncio.get_running_loop().run_in_executor(pool, func, *args)

    return run
