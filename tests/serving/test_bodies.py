"""serving/service/bodies.py as plain Python: JSON pixels and multipart forms in, arrays out."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import httpx
import numpy as np
import pytest
from starlette.requests import Request

from serving.service.bodies import INLINE_BYTES, InputError, parse_pixels, read_images, read_pixels


def request(body: bytes, content_type: str) -> Request:
    """A Starlette request with this body, as the server would hand it over."""
    messages = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive() -> dict[str, Any]:
        return messages.pop() if messages else {"type": "http.disconnect"}

    headers = [(b"content-type", content_type.encode())] if content_type else []
    return Request({"type": "http", "method": "POST", "headers": headers}, receive)


def recording_pool(calls: list[int]) -> Callable[..., asyncio.Future[Any]]:
    """A stand-in for the pool: runs the function inline and records the body size it got."""

    def run(func: Callable[..., Any], body: bytes, *args: Any) -> asyncio.Future[Any]:
        calls.append(len(body))
        future = asyncio.get_running_loop().create_future()
        future.set_result(func(body, *args))
        return future

    return run


@pytest.mark.parametrize("n", [1, 64])
def test_large_json_bodies_are_parsed_in_the_pool(n: int) -> None:
    pixels = np.random.default_rng(0).integers(0, 256, (n, 784))
    body = json.dumps({"pixels": pixels.tolist()}).encode()
    calls: list[int] = []
    X = asyncio.run(read_pixels(request(body, "application/json"), 64, recording_pool(calls)))
    np.testing.assert_array_equal(X, pixels)
    assert calls == ([] if len(body) <= INLINE_BYTES else [len(body)])


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (b'{"pixels": [[0, false' + b", 0" * 782 + b"]]}", "numbers"),
        (json.dumps({"pixels": [[[True] + [0] * 27] + [[0] * 28] * 27]}).encode(), "numbers"),
        (b'{"pixels": [[NaN' + b", 0" * 783 + b"]]}", "finite"),
        (b'{"pixels": 3}', "shape"),
        (b"  ", "empty body"),
    ],
)  # fmt: skip
def test_parse_pixels_refuses(body: bytes, words: str) -> None:
    with pytest.raises(InputError, match=words):
        parse_pixels(body, 8)


def test_booleans_in_other_fields_do_not_matter() -> None:
    body = b'{"pixels": [[1' + b", 0" * 783 + b']], "note": "true or false", "flag": true}'
    assert parse_pixels(body, 8).shape == (1, 784)


def form(files: list[tuple[str, bytes]]) -> tuple[bytes, str]:
    """A multipart body of (field, data) file parts and its content type."""
    built = httpx.Request("POST", "/", files=[(k, ("x.png", v, "image/png")) for k, v in files])
    return built.read(), built.headers["content-type"]


def test_read_images_keeps_each_file_in_order() -> None:
    body, content_type = form([("images", b"one"), ("images", b"two"), ("images", b"")])
    assert asyncio.run(read_images(request(body, content_type), 4)) == [b"one", b"two", b""]


@pytest.mark.parametrize(
    ("files", "status", "words"),
    [
        ([("images", b"a")] * 5, 413, "too many images"),
        ([("images", b"a"), ("other", b"b")], 400, "unexpected field 'other'"),
    ],
)
def test_read_images_refuses(files: list[tuple[str, bytes]], status: int, words: str) -> None:
    body, content_type = form(files)
    with pytest.raises(InputError, match=words) as caught:
        asyncio.run(read_images(request(body, content_type), 4))
    assert caught.value.status == status
