"""ASGI middlewares in front of the service: body size limit, backpressure, the OpenAPI document.

Reads request headers and counts body bytes; writes nothing. Each refusal is a JSON
{"error": ...} answer and one log line, sent before any parsing or model work. bento.py adds
them with BentoML's `add_asgi_middleware`.
"""

from __future__ import annotations

import orjson
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serving.service import openapi
from serving.service.bodies import InputError
from serving.service.logs import log_refusal
from serving.service.settings import Settings

RETRY_AFTER_S = 1  # a busy worker drains its queue in well under a second


class BodyTooLarge(InputError):
    """A body over DIGITS_MAX_BODY_BYTES, found while it streams in (no Content-Length)."""


async def send_error(scope: Scope, send: Send, status: int, error: str, **headers: str) -> None:
    """Answer a refusal as JSON and log it in one line."""
    log_refusal(scope["path"], status, error)
    body = orjson.dumps({"error": error})
    response = Response(body, status, headers=headers, media_type="application/json")
    await response(scope, _nothing, send)


async def _nothing() -> Message:
    return {"type": "http.disconnect"}  # the answer needs no more of the request


class BodyLimit:
    """Answer 413 to bodies over the limit: up front by Content-Length, else while they stream."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        error = f"request body too large (limit {self.max_bytes} bytes)"
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None:
            if not length.isdigit() or int(length) > self.max_bytes:
                return await send_error(scope, send, 413, error)
            # The server reads no more than a declared length: nothing left to count.
            return await self.app(scope, receive, send)
        seen, started = 0, False

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:  # the route's body reader turns this into its 413
                raise BodyTooLarge(error, 413)
            return message

        async def watched(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, watched)
        except BodyTooLarge:  # a route that does not read bodies through serving.service.bodies
            if started:
                raise
            await send_error(scope, send, 413, error)


class Admission:
    """Backpressure: past `max_queue` requests in flight, answer 503 with Retry-After at once."""

    def __init__(self, app: ASGIApp, max_queue: int, paths: tuple[str, ...]) -> None:
        self.app, self.max_queue, self.paths = app, max_queue, paths
        self.in_flight = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] not in self.paths:
            return await self.app(scope, receive, send)
        if self.in_flight >= self.max_queue:
            error = f"server busy: {self.in_flight} requests in flight; retry in {RETRY_AFTER_S} s"
            return await send_error(scope, send, 503, error, **{"retry-after": str(RETRY_AFTER_S)})
        self.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1


class OpenAPIDocument:
    """Serve our OpenAPI document at /docs.json, in place of the one BentoML derives."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app, self.body = app, orjson.dumps(openapi.document(settings))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == "/docs.json" and scope["method"] == "GET":
            response = Response(self.body, media_type="application/json")
            return await response(scope, receive, send)
        await self.app(scope, receive, send)
