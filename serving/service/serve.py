"""`digits serve`: start the BentoML service (serving/service/bento.py) on a model file.

Reads the ONNX model (default models/digits.onnx); writes nothing. Runs
`bentoml serve serving.service.bento:Digits` with the DIGITS_* settings taken from the options
(which default to those env vars); the other DIGITS_* settings (serving/service/settings.py) pass
through.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from serving.service.settings import Settings
from serving.session import PROVIDERS, cuda_problem

ROOT = Path(__file__).resolve().parents[2]  # the project root, for PYTHONPATH


def serve_command(port: int, host: str) -> list[str]:
    """The `bentoml serve` command line for the digits service."""
    target = "serving.service.bento:Digits"
    return [sys.executable, "-m", "bentoml", "serve", target, "--port", str(port), "--host", host]


@click.command()
@click.option(
    "--model",
    default="models/digits.onnx",
    show_default=True,
    envvar="DIGITS_MODEL",
    show_envvar=True,  # a bad value in the environment is then named in the error
    help="ONNX model file.",
)
@click.option(
    "--port", default=3000, show_default=True, type=click.IntRange(1, 65535), help="TCP port."
)
@click.option("--host", default="0.0.0.0", show_default=True, help="Interface to listen on.")
@click.option(
    "--provider",
    type=click.Choice(PROVIDERS),
    default="auto",
    show_default=True,
    envvar="DIGITS_PROVIDER",
    show_envvar=True,
    help="ONNX Runtime provider: CUDA when usable (auto), CUDA or fail, or CPU.",
)
@click.option(
    "--workers",
    default=1,
    show_default=True,
    type=click.IntRange(1),
    envvar="DIGITS_WORKERS",
    show_envvar=True,
    help="Server worker processes, each with its own model session.",
)
def serve(model: str, port: int, host: str, provider: str, workers: int) -> None:
    """Serve the model over HTTP: /predict, /predict_image, /info, a drawing page at /."""
    path = Path(model).resolve()
    if not path.is_file():
        raise click.BadParameter(f"no such file: {model}", param_hint="--model")
    if provider == "cuda" and (problem := cuda_problem()):
        raise click.ClickException(f"--provider cuda: CUDA is unusable here: {problem}")
    env = {**os.environ, "DIGITS_MODEL": str(path), "DIGITS_PROVIDER": provider}
    env["DIGITS_WORKERS"] = str(workers)
    try:  # the service would refuse them too, but only after BentoML has started
        Settings.from_env(env)
    except ValueError as err:
        raise click.ClickException(str(err)) from None
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    command = serve_command(port, host)
    os.execve(command[0], command, env)  # the server replaces this process: signals reach it
