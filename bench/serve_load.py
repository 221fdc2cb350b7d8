"""Load benchmark: the BentoML service vs a minimal uvicorn + ONNX Runtime server, same model.

Reads the ONNX model (default models/digits.onnx); writes bench/results/serve_load.json and prints
one summary line. Each server is started on a free port and loaded with wrk (POST /predict, one
image per request) at concurrency 1 and 32. Run: `python bench/serve_load.py [--model PATH]`.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click
import httpx
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
WRK_LUA = """wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = io.open("{body}"):read("*a")
"""
UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


async def reference(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """The reference: raw ASGI, json + numpy + ONNX Runtime, no validation beyond numpy's."""
    if scope["type"] != "http":
        return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    X = np.asarray(json.loads(body)["pixels"], np.float32).reshape(-1, 784)
    P = MODEL.run(["probabilities"], {"pixels": X})[0]
    out = {"digits": P.argmax(1).tolist(), "probabilities": P.tolist(), "model_version": "ref"}
    headers = [(b"content-type", b"application/json")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": json.dumps(out).encode()})


if __name__ != "__main__" and os.environ.get("DIGITS_MODEL"):  # imported by uvicorn
    import onnxruntime as ort

    MODEL = ort.InferenceSession(os.environ["DIGITS_MODEL"], providers=["CPUExecutionProvider"])


def free_port() -> int:
    """A TCP port nobody listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def server(command: list[str], port: int, env: dict[str, str]):
    """Start a server process, wait until it answers, stop it afterwards."""
    proc = subprocess.Popen(command, env={**os.environ, **env}, cwd=ROOT, stdout=subprocess.DEVNULL)
    try:
        for _ in range(300):
            try:
                if httpx.post(f"http://127.0.0.1:{port}/predict", content=PROBE).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        else:
            raise click.ClickException(f"server {command[2]} did not come up")
        yield f"http://127.0.0.1:{port}/predict"
    finally:
        proc.terminate()
        proc.wait(30)


def wrk(url: str, script: Path, connections: int, seconds: int) -> dict[str, float]:
    """Run wrk; return req/s and p50/p99 latency in milliseconds."""
    threads = str(min(connections, 2))
    command = ["wrk", "-t", threads, "-c", str(connections), "-d", f"{seconds}s", "--latency"]
    out = subprocess.run([*command, "-s", str(script), url], capture_output=True, text=True).stdout
    latency = dict(re.findall(r"^\s+(50|99)%\s+([\d.]+\w+)", out, re.M))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
        "p50_ms": to_ms(latency["50"]),
        "p99_ms": to_ms(latency["99"]),
        "errors": int(errors.group(1)) if errors else 0,
    }


def to_ms(value: str) -> float:
    """wrk's '1.23ms' / '850.00us' / '1.02s' -> milliseconds."""
    number, unit = re.fullmatch(r"([\d.]+)(\w+)", value).groups()
    return float(number) * UNITS[unit]


PIXELS = np.random.default_rng(0).integers(0, 256, size=(1, 784)).tolist()
PROBE = json.dumps({"pixels": PIXELS}).encode()


@click.command()
@click.option("--model", default="models/digits.onnx", type=click.Path(exists=True, dir_okay=False))
@click.option("--seconds", default=5, show_default=True, help="Duration of each wrk run.")
@click.option("--workers", default=1, show_default=True, help="BentoML workers (DIGITS_WORKERS).")
def main(model: str, seconds: int, workers: int) -> None:
    """Measure req/s and p50/p99 of /predict at concurrency 1 and 32 against the reference."""
    env = {"DIGITS_MODEL": str(Path(model).resolve()), "DIGITS_WORKERS": str(workers)}
    results: dict[str, Any] = {"model": model, "seconds": seconds, "workers": workers}
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "body.json").write_bytes(PROBE)
        script = Path(tmp) / "post.lua"
        script.write_text(WRK_LUA.format(body=Path(tmp) / "body.json"))
        ports = {"reference": free_port(), "bentoml": free_port()}
        commands = {
            "reference": [sys.executable, "-m", "uvicorn", "serve_load:reference", "--app-dir",
                          "bench", "--no-access-log", "--log-level", "warning", "--port"],
            "bentoml": [sys.executable, "-m", "bentoml", "serve", "serving.service:Digits",
                        "--port"],
        }  # fmt: skip
        for name, command in commands.items():
            with server([*command, str(ports[name])], ports[name], env) as url:
                results[name] = {c: wrk(url, script, c, seconds) for c in (1, 32)}
    ratio = results["bentoml"][32]["rps"] / results["reference"][32]["rps"]
    results["ratio_c32"] = ratio
    out = ROOT / "bench" / "results" / "serve_load.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    b, r = results["bentoml"], results["reference"]
    click.echo(
        f"serve_load: c=32 bentoml {b[32]['rps']:.0f} req/s p99 {b[32]['p99_ms']:.1f} ms, "
        f"reference {r[32]['rps']:.0f} req/s p99 {r[32]['p99_ms']:.1f} ms, ratio {ratio:.2f}; "
        f"c=1 bentoml {b[1]['rps']:.0f} vs {r[1]['rps']:.0f} req/s"
    )


if __name__ == "__main__":
    main()
