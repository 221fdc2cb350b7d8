"""The service's GET pages: the drawing page at /, the Swagger UI at /docs, model metadata at /info.

Reads serving/service/static/; writes nothing. BentoML APIs are POST-only, so these live in a small
Starlette app that bento.py mounts beside them with `@bentoml.asgi_app`.
"""

from __future__ import annotations

from pathlib import Path

import bentoml
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse
from starlette.routing import Route

STATIC = Path(__file__).parent / "static"


async def page(_: Request) -> FileResponse:
    """GET /: the drawing page."""
    return FileResponse(STATIC / "index.html")


async def info(_: Request) -> JSONResponse:
    """GET /info: model metadata and the ONNX Runtime provider in use."""
    return JSONResponse(bentoml.get_current_service().info())


async def docs(_: Request) -> FileResponse:
    """GET /docs: Swagger UI of the OpenAPI document, which the drawing page displaces from /."""
    return FileResponse(STATIC / "docs.html")


PAGES = Starlette(routes=[Route("/", page), Route("/info", info), Route("/docs", docs)])
