"""`digits score MODEL INPUT... -o OUT`: the command; its engines do the scoring.

Reads the command line once into ScoreOptions and hands it to the local engine (local.py) or,
with `--engine ray`, the Ray engine (ray_engine.py, the `ray` extra, imported only then); prints
the summary (rows, accuracy and confusion when labels are known) and the skipped inputs. User
mistakes and bad inputs are one line and exit 2 or 1. Writes only OUT, through the engines.
"""

from __future__ import annotations

import logging
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from serving.scoring.inputs import InputError
from serving.scoring.local import score_locally
from serving.scoring.options import ScoreOptions
from serving.scoring.rows import FORMATS
from serving.scoring.summary import Totals, summarize
from serving.session import PROVIDERS, ModelError, OnnxModel, ProviderError, load_model


def open_model(path: Path, provider: str, quiet: bool) -> OnnxModel:
    """Load the model, turning provider and model errors into one-line CLI errors."""
    logging.getLogger("serving.session").setLevel(logging.ERROR if quiet else logging.WARNING)
    try:
        return load_model(path, provider=provider)
    except (ProviderError, ModelError, FileNotFoundError) as err:
        raise click.ClickException(str(err)) from None


def output_format(path: str) -> str:
    """'csv', 'jsonl' or 'parquet' from the output's extension."""
    suffix = Path(path.rstrip("/")).suffix.lower()
    if suffix not in FORMATS:
        hint = f"use a .csv, .jsonl or .parquet file, not {Path(path).name!r}"
        raise click.BadParameter(hint, param_hint="-o")
    return FORMATS[suffix]


def report(totals: Totals, output: str, seconds: float, quiet: bool) -> None:
    """Print the summary (unless quiet) and the skipped inputs (always)."""
    if not quiet:
        rate = totals.rows / seconds if seconds else 0
        click.echo(f"scored {totals.rows} images -> {output} ({seconds:.1f} s, {rate:,.0f}/s)")
        if totals.matrix.sum():
            click.echo(summarize(totals.matrix))
    if totals.skipped:
        click.echo(f"skipped {len(totals.skipped)} bad input(s):", err=True)
        for line in totals.skipped:
            click.echo(f"  {line}", err=True)


def score_on_ray(model: str, inputs: Sequence[str], output: str, options: ScoreOptions) -> Totals:
    """Score on a Ray cluster (ray_engine.py) into the directory or URI `output`; the model is
    a path every node sees or a URI, opened by each actor."""
    if options.labels:
        hint = "needs --engine local (Ray reads labels beside IDX files and Parquet's 'label')"
        raise click.BadParameter(hint, param_hint="--labels")
    if "://" not in model:  # a bad model fails here, not in each actor
        checked = open_model(Path(model), "cpu", quiet=True)
    try:
        from serving.scoring import ray_engine
    except ImportError as err:
        if (err.name or "").partition(".")[0] not in ("ray", "pyarrow"):
            raise
        hint = "--engine ray needs the ray extra: pip install 'digits[ray]'"
        raise click.ClickException(hint) from None
    if "://" in model:
        try:
            with ray_engine.model_file(model) as path:
                checked = open_model(Path(path), "cpu", quiet=True)
        except OSError as err:
            raise click.ClickException(f"{model}: {err}") from None
    threshold = checked.threshold  # the actors flag answers under it
    return ray_engine.score_dataset(model, list(inputs), output, options, threshold)


def score_here(model: str, inputs: Sequence[str], output: str, options: ScoreOptions) -> Totals:
    """Score in this process (local.py) into the file `output`."""
    path = local_output(output)
    checked = open_model(Path(model), options.provider, options.quiet)
    return score_locally(checked, inputs, path, options)


def local_output(output: str) -> Path:
    """The local engine's output file; a directory or URI is a usage error."""
    if "://" in output or Path(output).is_dir():
        hint = f"{output!r} must be a file (a directory needs --engine ray)"
        raise click.BadParameter(hint, param_hint="-o")
    return Path(output)


def exit_on_sigterm() -> None:
    """Turn SIGTERM into SystemExit so the temp output is removed on the way out."""
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))


@click.command("score")
@click.argument("model", type=click.Path(dir_okay=False))
@click.argument("inputs", nargs=-1, required=True)
@click.option(
    "-o",
    "--output",
    required=True,
    help="Where to write the rows: .csv, .jsonl or .parquet, written atomically "
    "(with --engine ray: a directory of part files, local or a URI).",
)
@click.option(
    "--batch-size",
    default=1024,
    show_default=True,
    type=click.IntRange(1, 1 << 16),
    help="Images per inference call (and per read).",
)
@click.option(
    "--provider",
    type=click.Choice(PROVIDERS),
    default="auto",
    show_default=True,
    help="ONNX Runtime provider; auto uses CUDA when it works.",
)
@click.option("--probabilities", is_flag=True, help="Also write p0…p9.")
@click.option(
    "--labels",
    type=click.Path(dir_okay=False, path_type=Path),
    help="True labels for all images in input order (IDX, .npy or one per line).",
)
@click.option("--skip-bad", is_flag=True, help="Skip unreadable inputs, list them, exit 0.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar and no summary.")
@click.option(
    "--engine",
    type=click.Choice(["local", "ray"]),
    default="local",
    show_default=True,
    help="local: this process; ray: Ray Data over a cluster (the ray extra).",
)
@click.option(
    "--ray-address",
    help="Ray cluster to join (host:port or ray://…); default: $RAY_ADDRESS, else a local Ray.",
)
@click.option(
    "--actors",
    type=click.IntRange(1),
    help="Ray actors, one ONNX Runtime session each; default: one per CPU of the cluster.",
)
def score(model: str, inputs: tuple[str, ...], output: str, engine: str, **flags: Any) -> None:
    """Score images in IDX, .npy/.npz, CSV, Parquet or image files (or directories, globs).

    MODEL is an ONNX file with the digits.onnx contract. With --engine ray the same scoring runs
    in Ray Data (IDX, .npy, Parquet and image inputs, local paths or URIs) and OUTPUT is a
    directory of part files with the same columns; MODEL is then a path every node sees, or a
    URI (s3://…), which each actor opens.
    """
    options, started = ScoreOptions(fmt=output_format(output), **flags), time.perf_counter()
    exit_on_sigterm()
    try:
        if engine == "ray":
            totals = score_on_ray(model, inputs, output, options)
        else:
            totals = score_here(model, inputs, output, options)
    except InputError as err:
        raise click.ClickException(str(err)) from None
    report(totals, output, time.perf_counter() - started, options.quiet)
