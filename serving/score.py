"""Batch scoring: `digits score MODEL INPUT... -o OUT` (CSV or JSONL), streaming in chunks.

Reads an ONNX model with the digits.onnx contract and inputs that serving/inputs.py reads (IDX,
.npy/.npz, CSV, image files, directories, globs); writes one row per image (source id, digit,
confidence, optionally p0…p9) to OUT atomically, and prints accuracy and a confusion summary when
labels are known. Rows are formatted as whole numpy byte matrices, never row by row in Python.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import click
import numpy as np
from tqdm import tqdm

from digits.atomic import atomic_open
from digits.confusion import confusion_counts
from serving.inputs import (
    Chunk,
    InputError,
    expand_inputs,
    kind_of,
    load_labels,
    read_file,
    read_images,
    row_count,
)
from serving.session import PROVIDERS, ModelError, OnnxModel, ProviderError, load_model

FORMATS = {".csv": "csv", ".jsonl": "jsonl"}
# Lookup tables of digit text: ',d.dd' for 0…100 and 'dddd' for 0…9999 (two lookups per number).
HIGH = np.array([list(f",{i // 100}.{i % 100:02d}".encode()) for i in range(101)], np.uint8)
LOW = np.array([list(f"{i:04d}".encode()) for i in range(10_000)], np.uint8)
SPECIAL = {"csv": b',"\r\n', "jsonl": b'"\\' + bytes(range(1, 32))}  # bytes ids must escape


def constant(text: bytes, n: int) -> np.ndarray:
    """The same ASCII text on each of n rows, as a (n, len) uint8 matrix."""
    return np.broadcast_to(np.frombuffer(text, np.uint8), (n, len(text)))


def decimals(p: np.ndarray) -> np.ndarray:
    """Probabilities (N, k) in [0, 1] -> ASCII (N, k, 9), each ',d.dddddd'."""
    units = np.rint(np.clip(p.astype(np.float64), 0, 1) * 1e6).astype(np.int64)  # (N, k)
    return np.concatenate([HIGH[units // 10_000], LOW[units % 10_000]], axis=-1)


def quoted_ids(ids: np.ndarray, fmt: str) -> np.ndarray:
    """Ids as CSV fields or JSON strings, (N, width) uint8 with zero padding."""
    matrix = ids.view(np.uint8).reshape(len(ids), ids.itemsize)
    if fmt == "jsonl" or np.isin(matrix, np.frombuffer(SPECIAL["csv"], np.uint8)).any():
        if np.isin(matrix, np.frombuffer(SPECIAL[fmt], np.uint8)).any():  # rare: odd file names
            quote = json.dumps if fmt == "jsonl" else lambda s: '"' + s.replace('"', '""') + '"'
            ids = np.array([os.fsencode(quote(os.fsdecode(i))) for i in ids], dtype="S")
        else:
            ids = np.strings.add(np.strings.add(b'"', ids), b'"')
        matrix = ids.view(np.uint8).reshape(len(ids), ids.itemsize)
    return matrix


def format_rows(ids: np.ndarray, probabilities: np.ndarray, fmt: str, all_p: bool) -> bytes:
    """Output rows for one chunk: CSV lines or JSON lines, built as one byte matrix."""
    n = len(ids)
    digit = (48 + probabilities.argmax(axis=1)).astype(np.uint8)[:, None]
    confidence = decimals(probabilities.max(axis=1, keepdims=True)).reshape(n, 9)
    p = decimals(probabilities).reshape(n, -1) if all_p else np.empty((n, 0), np.uint8)
    if fmt == "csv":
        parts = [quoted_ids(ids, fmt), constant(b",", n), digit, confidence, p]
        parts.append(constant(b"\n", n))
    else:
        if all_p:
            p = np.concatenate([constant(b',"probabilities":[', n), p[:, 1:], constant(b"]", n)], 1)
        parts = [constant(b'{"source":', n), quoted_ids(ids, fmt), constant(b',"digit":', n)]
        parts += [digit, constant(b',"confidence":', n), confidence[:, 1:], p, constant(b"}\n", n)]
    flat = np.concatenate(parts, axis=1).ravel()
    return flat[flat != 0].tobytes()  # drop the zero padding of the fixed-width ids


def header(fmt: str, all_p: bool) -> bytes:
    """The CSV header line (JSONL has none)."""
    names = ["source", "digit", "confidence"] + [f"p{i}" for i in range(10)] * all_p
    return (",".join(names) + "\n").encode() if fmt == "csv" else b""


def summarize(matrix: np.ndarray) -> str:
    """Accuracy, the confusion matrix with per-class recall, and the most common mistakes."""
    total, right = int(matrix.sum()), int(np.trace(matrix))
    lines = [f"accuracy {right / total:.4f} ({right}/{total} labelled images)"]
    lines.append("confusion (rows: true digit, columns: predicted; last: recall)")
    lines.append("     " + "".join(f"{d:>6}" for d in range(10)))
    for d, row in enumerate(matrix):
        recall = row[d] / row.sum() if row.sum() else float("nan")
        lines.append(f"{d:>5}" + "".join(f"{c:>6}" for c in row) + f"  {recall:.3f}")
    errors = matrix - np.diag(np.diag(matrix))
    worst = [divmod(int(i), 10) for i in np.argsort(-errors, axis=None, kind="stable")[:5]]
    mistakes = [f"{t}→{p} ({errors[t, p]})" for t, p in worst if errors[t, p]]
    lines.append("most confused: " + (", ".join(mistakes) or "none"))
    return "\n".join(lines)


def group_inputs(paths: list[Path]) -> Iterator[list[Path]]:
    """Runs of consecutive image files together (scored in shared batches), other files alone."""
    for is_image, run in itertools.groupby(paths, key=lambda p: kind_of(p) == "image"):
        files = list(run)
        yield from [files] if is_image else ([p] for p in files)


@dataclass
class Scorer:
    """Scores inputs into one open output file, tallying labelled rows; undoes skipped inputs."""

    model: OnnxModel
    out: IO[bytes]
    fmt: str
    all_p: bool
    batch: int
    given: np.ndarray | None  # --labels: one per image, in input order
    skipped: list[str] | None  # None: the first bad input stops the run
    bar: tqdm
    rows: int = 0
    matrix: np.ndarray = field(default_factory=lambda: np.zeros((10, 10), np.int64))

    def score_chunks(self, chunks: Iterator[Chunk]) -> None:
        """Predict and write each chunk; count labelled rows into the confusion matrix."""
        for chunk in chunks:
            n = len(chunk.ids)
            _, probabilities = self.model.predict(np.asarray(chunk.pixels, dtype=np.float32))
            self.out.write(format_rows(chunk.ids, probabilities, self.fmt, self.all_p))
            labels = chunk.labels if self.given is None else self.given[self.rows : self.rows + n]
            if labels is not None:
                if len(labels) != n:
                    raise InputError(f"--labels has {len(self.given)} labels, inputs have more")
                try:
                    self.matrix += confusion_counts(labels, probabilities.argmax(axis=1))
                except ValueError as err:
                    raise InputError(str(err)) from None
            self.rows += n
            self.bar.update(n)

    def score_input(self, paths: list[Path]) -> None:
        """Score one file or a run of image files; with skipping on, a failure leaves no rows."""
        mark, rows, matrix = self.out.tell(), self.rows, self.matrix.copy()
        if kind_of(paths[0]) == "image":
            chunks = read_images(paths, self.batch, self.skipped)
        else:
            chunks = read_file(paths[0], self.batch)
        try:
            self.score_chunks(chunks)
        except InputError as err:
            if self.skipped is None:
                raise
            self.skipped.append(str(err))
            self.out.seek(mark)
            self.out.truncate()
            self.rows, self.matrix = rows, matrix


def open_model(path: Path, provider: str, quiet: bool) -> OnnxModel:
    """Load the model, turning provider and model errors into one-line CLI errors."""
    logging.getLogger("serving.session").setLevel(logging.ERROR if quiet else logging.WARNING)
    try:
        return load_model(path, provider=provider)
    except (ProviderError, ModelError, FileNotFoundError) as err:
        raise click.ClickException(str(err)) from None


def output_format(path: Path) -> str:
    """'csv' or 'jsonl' from the output file's extension."""
    if path.suffix.lower() not in FORMATS:
        raise click.BadParameter(f"use a .csv or .jsonl file, not {path.name!r}", param_hint="-o")
    return FORMATS[path.suffix.lower()]


def record(item: Path | InputError, skipped: list[str] | None) -> bool:
    """True for a bad input that is skipped; raise it when skipping is off."""
    if not isinstance(item, InputError):
        return False
    if skipped is None:
        raise item
    skipped.append(str(item))
    return True


def progress(paths: list[Path], quiet: bool) -> tqdm:
    """A progress bar on a terminal (stderr), silent otherwise or with -q."""
    shown = not quiet and sys.stderr.isatty()
    # Sizing the bar opens every input once more; only pay that when the bar is drawn.
    return tqdm(
        total=row_count(paths) if shown else None, unit="img", unit_scale=True, disable=not shown
    )


def report(scorer: Scorer, output: Path, seconds: float, skipped: list[str] | None, quiet: bool):
    """Print the summary (unless quiet) and the skipped inputs (always)."""
    if not quiet:
        rate = scorer.rows / seconds if seconds else 0
        click.echo(f"scored {scorer.rows} images -> {output} ({seconds:.1f} s, {rate:,.0f}/s)")
        if scorer.matrix.sum():
            click.echo(summarize(scorer.matrix))
    if skipped:
        click.echo(f"skipped {len(skipped)} bad input(s):", err=True)
        for line in skipped:
            click.echo(f"  {line}", err=True)


def exit_on_sigterm() -> None:
    """Turn SIGTERM into SystemExit so the temp output is removed on the way out."""
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))


@click.command("score")
@click.argument("model", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("inputs", nargs=-1, required=True)
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Where to write the rows: .csv or .jsonl (written atomically).",
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
def score(
    model: Path,
    inputs: tuple[str, ...],
    output: Path,
    batch_size: int,
    provider: str,
    probabilities: bool,
    labels: Path | None,
    skip_bad: bool,
    quiet: bool,
) -> None:
    """Score images in IDX, .npy/.npz, CSV or image files (or directories, globs) with MODEL."""
    fmt, started = output_format(output), time.perf_counter()
    exit_on_sigterm()
    onnx_model = open_model(model, provider, quiet)
    skipped: list[str] | None = [] if skip_bad else None
    try:
        given = load_labels(labels) if labels else None
        paths = [p for p in expand_inputs(list(inputs)) if not record(p, skipped)]
        with atomic_open(output, buffering=1 << 20) as out, progress(paths, quiet) as bar:
            out.write(header(fmt, probabilities))
            scorer = Scorer(onnx_model, out, fmt, probabilities, batch_size, given, skipped, bar)
            for group in group_inputs(paths):
                scorer.score_input(group)
            if given is not None and len(given) != scorer.rows:
                raise InputError(f"--labels has {len(given)} labels for {scorer.rows} images")
    except InputError as err:
        raise click.ClickException(str(err)) from None
    report(scorer, output, time.perf_counter() - started, skipped, quiet)
