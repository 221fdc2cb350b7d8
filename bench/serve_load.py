"""Load benchmark: the BentoML service vs a minimal uvicorn + ONNX Runtime server, same model.

Reads the ONNX model (default models/digits.onnx); writes bench/results/serve_load.json and prints
one summary line per route. Each server is started on a free port and loaded with wrk, one image
per request, at concurrency 1 and 32: POST /predict (JSON pixels) and POST /predict_image (one
28×28 PNG). Rounds alternate between the servers so both see the same background load; medians
and the min–max spread are reported. Run: `python bench/serve_load.py [--model PATH]`.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import click
import httpx
import numpy as np
import psutil
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
WRK_LUA = """wrk.method = "POST"
wrk.headers["Content-Type"] = "{content_type}"
wrk.body = io.open("{body}", "rb"):read("*a")
"""
UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


async def reference(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """The reference: raw ASGI, json + numpy + ONNX Runtime, no validation beyond numpy's."""
    if scope["type"] != "http":
        return
    if scope["path"] == "/predict_image":  # Starlette's form parser, our image preparation
        form = await Request(scope, receive).form()
        images = [await f.read() for f in form.getlist("images")]
        X = np.stack([to_mnist(load_image(data)) for data in images]).reshape(-1, 784)
    else:
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        X = json.loads(body)["pixels"]
    P = MODEL.predict(np.asarray(X, np.float32).reshape(-1, 784))[1]
    out = {"digits": P.argmax(1).tolist(), "probabilities": P.tolist(), "model_version": "ref"}
    headers = [(b"content-type", b"application/json")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": json.dumps(out).encode()})


if __name__ != "__main__" and os.environ.get("DIGITS_MODEL"):  # imported by uvicorn
    from starlette.requests import Request

    from digits.images import load_image, to_mnist
    from serving.session import load_model

    # The service's own session settings, so the comparison measures the web layers alone.
    MODEL = load_model(os.environ["DIGITS_MODEL"], "cpu", threads=1)


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
                if httpx.post(f"http://127.0.0.1:{port}/predict", json=PIXELS).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        else:
            raise click.ClickException(f"server {command[2]} did not come up")
        yield f"http://127.0.0.1:{port}", proc.pid
    finally:
        proc.terminate()
        proc.wait(30)


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) used so far by a process and all its children."""
    root = psutil.Process(pid)
    times = [p.cpu_times() for p in [root, *root.children(recursive=True)]]
    return sum(t.user + t.system for t in times)


def wrk(url: str, pid: int, script: Path, connections: int, seconds: int) -> dict[str, float]:
    """Run wrk; return req/s, p50/p99 latency (ms) and the server's CPU ms per request."""
    cpu = cpu_seconds(pid)
    threads = str(min(connections, 2))
    command = ["wrk", "-t", threads, "-c", str(connections), "-d", f"{seconds}s", "--latency"]
    out = subprocess.run([*command, "-s", str(script), url], capture_output=True, text=True).stdout
    latency = dict(re.findall(r"^\s+(50|99)%\s+([\d.]+\w+)", out, re.M))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    requests = int(re.search(r"(\d+) requests in", out).group(1))
    return {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
        "p50_ms": to_ms(latency["50"]),
        "p99_ms": to_ms(latency["99"]),
        "errors": int(errors.group(1)) if errors else 0,
        # CPU per request resists the shared machine's noise better than wall-clock rates.
        "cpu_ms_per_req": (cpu_seconds(pid) - cpu) * 1000 / max(requests, 1),
    }


def to_ms(value: str) -> float:
    """wrk's '1.23ms' / '850.00us' / '1.02s' -> milliseconds."""
    number, unit = re.fullmatch(r"([\d.]+)(\w+)", value).groups()
    return float(number) * UNITS[unit]


PIXELS = {"pixels": np.random.default_rng(0).integers(0, 256, size=(1, 784)).tolist()}


def png_form() -> tuple[bytes, str]:
    """A multipart body with one 28×28 PNG of a digit-like stroke, and its content type."""
    image = np.zeros((28, 28), np.uint8)
    image[4:24, 12:16] = 255
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    request = httpx.Request(
        "POST", "/", files=[("images", ("d.png", buffer.getvalue(), "image/png"))]
    )
    return request.read(), request.headers["content-type"]


def median_runs(runs: list[dict[str, float]]) -> dict[str, float]:
    """Per-metric median over rounds (the machine is shared; medians resist one noisy run)."""
    return {k: float(np.median([r[k] for r in runs])) for k in runs[0]}


def spread(runs: list[dict[str, float]]) -> dict[str, list[float]]:
    """Per-metric [min, max] over rounds, to show how noisy the medians are."""
    return {k: [min(r[k] for r in runs), max(r[k] for r in runs)] for k in runs[0]}


def load_average() -> list[float]:
    """The machine's 1, 5 and 15 minute load averages (how shared it was)."""
    return [round(x, 2) for x in os.getloadavg()]


def write_scripts(tmp: Path) -> dict[str, Path]:
    """A wrk Lua script per route, each posting its one-image body."""
    form, form_type = png_form()
    bodies = {
        "predict": (json.dumps(PIXELS).encode(), "application/json"),
        "predict_image": (form, form_type),
    }
    scripts = {}
    for route, (body, content_type) in bodies.items():
        (tmp / f"{route}.body").write_bytes(body)
        script = tmp / f"{route}.lua"
        script.write_text(WRK_LUA.format(body=tmp / f"{route}.body", content_type=content_type))
        scripts[route] = script
    return scripts


def paired_ratios(b: list[dict[str, float]], r: list[dict[str, float]]) -> dict[str, list[float]]:
    """Service / reference per round, each pair run back to back: [median, min, max] per metric.

    On a shared machine a neighbour's burst hits one round of one server; a ratio within a
    round cancels most of the background that both servers of that round saw.
    """
    ratios = {k: [x[k] / y[k] for x, y in zip(b, r, strict=True) if y[k]] for k in b[0]}
    return {k: [float(np.median(v)), min(v), max(v)] for k, v in ratios.items() if v}


def summary(route: str, b: dict, r: dict, paired: dict) -> str:
    """One line: the service against the reference at c=32 and c=1, with issue #27's goals."""
    return (
        f"serve_load {route}: c=32 {b[32]['rps']:.0f} vs {r[32]['rps']:.0f} req/s "
        f"(paired x{paired[32]['rps'][0]:.2f}, goal >= 0.9), p99 {b[32]['p99_ms']:.1f} vs "
        f"{r[32]['p99_ms']:.1f} ms (paired x{paired[32]['p99_ms'][0]:.2f}, goal <= 1.5); "
        f"c=1 p50 {b[1]['p50_ms']:.2f} vs {r[1]['p50_ms']:.2f} ms "
        f"(paired x{paired[1]['p50_ms'][0]:.2f}, goal <= 1.7)"
    )


@click.command()
@click.option("--model", default="models/digits.onnx", type=click.Path(exists=True, dir_okay=False))
@click.option("--seconds", default=4, show_default=True, help="Duration of each wrk run.")
@click.option("--rounds", default=3, show_default=True, help="Alternating rounds per server.")
@click.option("--workers", default=1, show_default=True, help="BentoML workers (DIGITS_WORKERS).")
def main(model: str, seconds: int, rounds: int, workers: int) -> None:
    """Measure req/s and p50/p99 of both routes at concurrency 1 and 32 against the reference."""
    if shutil.which("wrk") is None:
        raise click.ClickException("needs wrk: apt-get install wrk")
    env = {"DIGITS_MODEL": str(Path(model).resolve()), "DIGITS_WORKERS": str(workers)}
    results: dict[str, Any] = {"model": model, "seconds": seconds, "rounds": rounds}
    results.update(workers=workers, cpus=os.cpu_count(), load_before=load_average())
    ports = {"reference": free_port(), "bentoml": free_port()}
    commands = {
        "reference": [sys.executable, "-m", "uvicorn", "serve_load:reference", "--app-dir",
                      "bench", "--no-access-log", "--log-level", "warning", "--port"],
        "bentoml": [sys.executable, "-m", "bentoml", "serve", "serving.service.bento:Digits",
                    "--port"],
    }  # fmt: skip
    routes, levels = ("predict", "predict_image"), (1, 32)
    runs = {name: {route: {c: [] for c in levels} for route in routes} for name in commands}
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        scripts = write_scripts(Path(tmp))
        urls = {
            name: stack.enter_context(server([*command, str(ports[name])], ports[name], env))
            for name, command in commands.items()
        }
        for _ in range(rounds):  # alternate, so both servers see the same background load
            for route in routes:
                for c in levels:
                    for name, (url, pid) in urls.items():
                        result = wrk(f"{url}/{route}", pid, scripts[route], c, seconds)
                        runs[name][route][c].append(result)
    results["load_after"] = load_average()
    for name in commands:
        results[name] = {
            route: {c: {**median_runs(runs[name][route][c]), "spread": spread(runs[name][route][c])}
                    for c in levels}
            for route in routes
        }  # fmt: skip
    results["runs"] = runs
    results["paired_ratios"] = {
        route: {c: paired_ratios(runs["bentoml"][route][c], runs["reference"][route][c])
                for c in levels}
        for route in routes
    }  # fmt: skip
    out = ROOT / "bench" / "results" / "serve_load.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    for route in routes:
        b, r = results["bentoml"][route], results["reference"][route]
        click.echo(summary(route, b, r, results["paired_ratios"][route]))
    click.echo(
        f"medians of {rounds} rounds of {seconds} s; load average {results['load_before']} "
        f"before, {results['load_after']} after, on {results['cpus']} CPUs"
    )


if __name__ == "__main__":
    main()
