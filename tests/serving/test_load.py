"""A started server under load: backpressure past DIGITS_MAX_QUEUE, graceful shutdown on SIGTERM."""

from __future__ import annotations

import asyncio
import io
import signal
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.conftest import write_linear_onnx
from tests.serving.conftest import running_server, server_process

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_linear_onnx(tmp_path_factory.mktemp("model") / "digits.onnx", seed=3)


def slow_upload(side: int = 1500, n: int = 2) -> list[tuple[str, tuple[str, bytes, str]]]:
    """n large noise images: a request that keeps the decoding pool busy for a while."""
    pixels = np.random.default_rng(0).integers(0, 256, size=(side, side), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG", compress_level=1)
    return [("images", ("x.png", buffer.getvalue(), "image/png"))] * n


async def flood(url: str, n: int, files: list) -> list[tuple[httpx.Response, float]]:
    """n concurrent uploads; each response with its latency in seconds."""

    async def one(client: httpx.AsyncClient) -> tuple[httpx.Response, float]:
        start = time.monotonic()
        response = await client.post(f"{url}/predict_image", files=files)
        return response, time.monotonic() - start

    limits = httpx.Limits(max_connections=n)
    async with httpx.AsyncClient(limits=limits, timeout=120) as client:
        return await asyncio.gather(*(one(client) for _ in range(n)))


def test_a_flood_past_the_queue_gets_503_at_once(model: Path, tmp_path: Path) -> None:
    with running_server(model, tmp_path / "server.log", max_queue=4, decode_threads=1) as url:
        answers = asyncio.run(flood(url, 24, slow_upload()))
        statuses = sorted({r.status_code for r, _ in answers})
        assert statuses == [200, 503], statuses
        busy = [(r, s) for r, s in answers if r.status_code == 503]
        accepted = [s for r, s in answers if r.status_code == 200]
        assert len(accepted) >= 4  # the queue's worth got through
        for response, _ in busy:
            assert response.headers["retry-after"] == "1"
            assert "server busy" in response.json()["error"]
        # Refused at once, not after waiting behind the accepted ones.
        assert max(s for _, s in busy) < max(accepted)
        assert np.median([s for _, s in busy]) < 0.5 * max(accepted)
        assert httpx.post(f"{url}/predict", json={"pixels": [[0] * 784]}).status_code == 200


def test_sigterm_lets_in_flight_requests_finish_and_exits_0(model: Path, tmp_path: Path) -> None:
    files = slow_upload(n=4)
    with server_process(model, tmp_path / "server.log") as (url, proc):

        async def in_flight_then_sigterm() -> tuple[list[httpx.Response], str]:
            sending = asyncio.ensure_future(flood(url, 4, files))
            await asyncio.sleep(0.4)  # the four are being decoded now
            proc.send_signal(signal.SIGTERM)
            await asyncio.sleep(0.2)
            try:
                async with httpx.AsyncClient(timeout=5) as client:
                    late = await client.post(f"{url}/predict", json={"pixels": [[0] * 784]})
                    outcome = f"answered {late.status_code}"
            except httpx.TransportError as err:
                outcome = f"refused: {err!r}"
            return [r for r, _ in await sending], outcome

        responses, late = asyncio.run(in_flight_then_sigterm())
        assert [r.status_code for r in responses] == [200] * 4
        assert late.startswith("refused") or late == "answered 503", late
        assert proc.wait(30) == 0
