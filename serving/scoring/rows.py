"""Batch scoring: `digits score MODEL INPUT... -o OUT` (CSV, JSONL or Parquet), in chunks.

Reads an ONNX model with the digits.onnx contract and inputs that serving/inputs.py reads (IDX,
.npy/.npz, CSV, Parquet, image files, directories, globs); writes one row per image (source id,
digit, confidence, optionally p0…p9) to OUT atomically, and prints accuracy and a confusion summary
when labels are known. Text rows are formatted as whole numpy byte matrices, never row by row in
Python. `--engine ray` hands the same work to serving/ray_score.py (the `ray` extra).
"""

from __future__ import annotations

import contextlib
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
from typing import IO, Any

import click
import numpy as np
from tqdm import tqdm

from digits.atomic import atomic_open, atomic_path
from digits.confusion import confusion_counts
from serving.answers import Answers, answer_rows, no_digit_reasons
from serving.scoring.inputs import (
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

FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".parquet": "parquet"}
ROW_GROUP = 1 << 16  # Parquet rows per row group: large enough for readers, small in memory
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


def choose(rows: np.ndarray, when: np.ndarray, other: bytes) -> np.ndarray:
    """Byte rows (N, k) with `other` (zero-padded) in the rows where `when` is True."""
    width = max(rows.shape[1], len(other))
    out = np.zeros((len(rows), width), np.uint8)
    out[:, : rows.shape[1]] = rows
    out[when] = 0
    out[when, : len(other)] = np.frombuffer(other, np.uint8)
    return out


def csv_field(text: str) -> str:
    """A text as one CSV field, quoted when it holds a comma, quote or line break."""
    return '"' + text.replace('"', '""') + '"' if any(c in text for c in ',"\r\n') else text


def texts(values: list[str | None], fmt: str) -> np.ndarray:
    """Optional texts as CSV fields (empty for None) or JSON (null), (N, width) uint8."""
    quote, none = (csv_field, b"") if fmt == "csv" else (json.dumps, b"null")
    if all(v is None for v in values):  # the common case: every image holds a digit
        return constant(none, len(values)) if none else np.zeros((len(values), 0), np.uint8)
    encoded = {v: quote(v).encode() for v in set(values) if v is not None}  # a handful of texts
    column = np.array([encoded[v] if v is not None else none for v in values], dtype="S")
    return column.view(np.uint8).reshape(len(values), column.itemsize)


def format_rows(
    ids: np.ndarray, probabilities: np.ndarray, answers: Answers, fmt: str, all_p: bool
) -> bytes:
    """Output rows for one chunk: CSV lines or JSON lines, built as one byte matrix."""
    n, none = len(ids), ~answers.answered
    digit = (48 + answers.digits).astype(np.uint8)[:, None]
    confidence = decimals(answers.confidence[:, None]).reshape(n, 9)
    p = decimals(probabilities) if all_p else np.empty((n, 0, 9), np.uint8)  # (N, k, 9)
    low = answers.low
    if fmt == "csv":
        # No digit: empty digit, confidence and p fields, their commas kept.
        digit, confidence, p = choose(digit, none, b""), choose(confidence, none, b","), p.copy()
        p[none, :, 1:] = 0
        flags = choose(constant(b",false", n), low, b",true")
        parts = [quoted_ids(ids, fmt), constant(b",", n), digit, confidence, p.reshape(n, -1)]
        parts += [constant(b",", n), texts(answers.reasons, fmt), flags, constant(b"\n", n)]
    else:
        if all_p:
            p = np.concatenate(
                [constant(b',"probabilities":[', n), p.reshape(n, -1)[:, 1:], constant(b"]", n)], 1
            )
            p = choose(p, none, b',"probabilities":null')
        else:
            p = p.reshape(n, 0)
        flags = choose(constant(b',"low_confidence":false', n), low, b',"low_confidence":true')
        parts = [constant(b'{"source":', n), quoted_ids(ids, fmt), constant(b',"digit":', n)]
        parts += [choose(digit, none, b"null"), constant(b',"confidence":', n)]
        parts += [choose(confidence[:, 1:], none, b"null"), p, constant(b',"reason":', n)]
        parts += [texts(answers.reasons, fmt), flags, constant(b"}\n", n)]
    flat = np.concatenate(parts, axis=1).ravel()
    return flat[flat != 0].tobytes()  # drop the zero padding of the fixed-width fields


def column_names(all_p: bool) -> list[str]:
    """The output columns in every format; the newer ones last, for readers by position."""
    probabilities = [f"p{i}" for i in range(10)] * all_p
    return ["source", "digit", "confidence", *probabilities, "reason", "low_confidence"]


def header(fmt: str, all_p: bool) -> bytes:
    """The CSV header line (JSONL has none)."""
    return (",".join(column_names(all_p)) + "\n").encode() if fmt == "csv" else b""


def import_pyarrow() -> Any:
    """pyarrow, or a one-line CLI error saying which extra brings it."""
    try:
        import pyarrow
        import pyarrow.parquet  # noqa: F401  (loads the submodule onto pyarrow)
    except ImportError:
        raise click.ClickException("Parquet needs pyarrow: pip install 'digits[parquet]'") from None
    return pyarrow


def arrow_rows(ids: np.ndarray, probabilities: np.ndarray, answers: Answers, all_p: bool) -> Any:
    """One chunk's rows as an Arrow table with the text formats' columns (exact float32)."""
    pa = import_pyarrow()
    try:
        sources = pa.array(ids, pa.binary()).cast(pa.string())
    except pa.ArrowInvalid:  # rare: a file name that is not UTF-8
        sources = pa.array([i.decode("utf-8", "backslashreplace") for i in ids.tolist()])
    none = ~answers.answered  # null digit, confidence and probabilities
    columns = [
        sources,
        pa.array(answers.digits.astype(np.int64), mask=none),
        pa.array(answers.confidence.astype(np.float32), mask=none),
    ]
    if all_p:
        columns += [pa.array(probabilities[:, k].astype(np.float32), mask=none) for k in range(10)]
    columns += [pa.array(answers.reasons, pa.string()), pa.array(answers.low, pa.bool_())]
    return pa.table(columns, names=column_names(all_p))


def empty_schema(all_p: bool) -> Any:
    """The Arrow schema of the output rows."""
    answers = answer_rows(np.zeros((0, 10), np.float32), [], 0.0)
    return arrow_rows(np.array([], "S1"), np.zeros((0, 10), np.float32), answers, all_p).schema


class TextRows:
    """CSV or JSONL rows into an open file; taking rows back is a truncate."""

    def __init__(self, out: IO[bytes], fmt: str, all_p: bool) -> None:
        self.out, self.fmt, self.all_p = out, fmt, all_p
        out.write(header(fmt, all_p))

    def write(self, ids: np.ndarray, probabilities: np.ndarray, answers: Answers) -> None:
        """Append one chunk's rows."""
        self.out.write(format_rows(ids, probabilities, answers, self.fmt, self.all_p))

    def mark(self) -> int:
        """A point to take rows back to."""
        return self.out.tell()

    def rollback(self, mark: int) -> None:
        """Remove every row written since `mark`."""
        self.out.seek(mark)
        self.out.truncate()


class ParquetRows:
    """Parquet rows into a file, one input per row group run; taken-back groups are dropped."""

    def __init__(self, path: Path, all_p: bool) -> None:
        self.pa, self.path, self.all_p = import_pyarrow(), path, all_p
        self.pq = self.pa.parquet
        self.schema = empty_schema(all_p)
        self.writer = self.pq.ParquetWriter(path, self.schema)
        self.pending: list[Any] = []
        self.groups = 0
        self.dropped: set[int] = set()

    def write(self, ids: np.ndarray, probabilities: np.ndarray, answers: Answers) -> None:
        """Buffer one chunk's rows; a full buffer becomes a row group."""
        self.pending.append(arrow_rows(ids, probabilities, answers, self.all_p))
        if sum(len(t) for t in self.pending) >= ROW_GROUP:
            self.flush()

    def flush(self) -> None:
        """Write the buffered rows as one row group."""
        if self.pending:
            table = self.pa.concat_tables(self.pending)
            self.writer.write_table(table, row_group_size=len(table))
            self.pending, self.groups = [], self.groups + 1

    def mark(self) -> int:
        """Start a new row group, so an input's rows never share one with another's."""
        self.flush()
        return self.groups

    def rollback(self, mark: int) -> None:
        """Drop the rows written since `mark` (row groups already written go at close)."""
        self.pending = []
        self.dropped.update(range(mark, self.groups))

    def close(self) -> None:
        """Finish the file; copy it without dropped row groups if any (rare: --skip-bad)."""
        self.flush()
        if not self.groups:  # a file with no row group still needs its schema
            self.writer.write_table(self.schema.empty_table())
        self.writer.close()
        if self.dropped:
            kept = self.path.with_name(self.path.name + ".kept")
            source = self.pq.ParquetFile(self.path)
            with self.pq.ParquetWriter(kept, self.schema) as writer:
                for group in sorted(set(range(self.groups)) - self.dropped):
                    writer.write_table(source.read_row_group(group))
                if len(self.dropped) == self.groups:
                    writer.write_table(self.schema.empty_table())
            os.replace(kept, self.path)


@contextlib.contextmanager
def open_rows(output: Path, fmt: str, all_p: bool) -> Iterator[TextRows | ParquetRows]:
    """Rows of the chosen format into `output`, renamed into place only when complete."""
    if fmt != "parquet":
        with atomic_open(output, buffering=1 << 20) as out:
            yield TextRows(out, fmt, all_p)
        return
    with atomic_path(output) as tmp:
        rows = ParquetRows(tmp, all_p)
        try:
            yield rows
        except BaseException:
            rows.writer.close()  # atomic_path then removes the temp file
            raise
        rows.close()


def tally(labels: np.ndarray, digits: np.ndarray, answered: np.ndarray) -> np.ndarray:
    """Counts (10, 11) of labelled rows: row = true digit, column = answer (10: no digit)."""
    matrix = confusion_counts(labels, np.where(answered, digits, 0))
    none = np.bincount(np.asarray(labels, np.int64)[~answered], minlength=10)
    matrix[:, 0] -= none  # those rows were counted as 0 above
    return np.column_stack([matrix, none])


def summarize(matrix: np.ndarray) -> str:
    """Accuracy, the confusion matrix with per-class recall, and the most common mistakes."""
    total, right = int(matrix.sum()), int(np.trace(matrix[:, :10]))
    lines = [f"accuracy {right / total:.4f} ({right}/{total} labelled images)"]
    if none := int(matrix[:, 10].sum()):
        lines.append(f"no digit found in {none} labelled images (counted as wrong)")
    lines.append("confusion (rows: true digit, columns: answer; last: recall)")
    lines.append("     " + "".join(f"{d:>6}" for d in [*range(10), "none"]))
    for d, row in enumerate(matrix):
        recall = row[d] / row.sum() if row.sum() else float("nan")
        lines.append(f"{d:>5}" + "".join(f"{c:>6}" for c in row) + f"  {recall:.3f}")
    errors = matrix[:, :10] - np.diag(np.diag(matrix))
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
    out: TextRows | ParquetRows
    batch: int
    given: np.ndarray | None  # --labels: one per image, in input order
    skipped: list[str] | None  # None: the first bad input stops the run
    bar: tqdm
    rows: int = 0
    matrix: np.ndarray = field(default_factory=lambda: np.zeros((10, 11), np.int64))

    def score_chunks(self, chunks: Iterator[Chunk]) -> None:
        """Predict and write each chunk; count labelled rows into the confusion matrix."""
        for chunk in chunks:
            n = len(chunk.ids)
            _, probabilities = self.model.predict(np.asarray(chunk.pixels, dtype=np.float32))
            reasons = no_digit_reasons(chunk.pixels, chunk.reasons)
            answers = answer_rows(probabilities, reasons, self.model.threshold)
            self.out.write(chunk.ids, probabilities, answers)
            labels = chunk.labels if self.given is None else self.given[self.rows : self.rows + n]
            if labels is not None:
                if len(labels) != n:
                    raise InputError(f"--labels has {len(self.given)} labels, inputs have more")
                try:
                    self.matrix += tally(labels, answers.digits, answers.answered)
                except ValueError as err:
                    raise InputError(str(err)) from None
            self.rows += n
            self.bar.update(n)

    def score_input(self, paths: list[Path]) -> None:
        """Score one file or a run of image files; with skipping on, a failure leaves no rows."""
        mark, rows, matrix = self.out.mark(), self.rows, self.matrix.copy()
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
            self.out.rollback(mark)
            self.rows, self.matrix = rows, matrix


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


def report(
    rows: int,
    matrix: np.ndarray,
    output: str | Path,
    seconds: float,
    skipped: list[str] | None,
    quiet: bool,
) -> None:
    """Print the summary (unless quiet) and the skipped inputs (always)."""
    if not quiet:
        rate = rows / seconds if seconds else 0
        click.echo(f"scored {rows} images -> {output} ({seconds:.1f} s, {rate:,.0f}/s)")
        if matrix.sum():
            click.echo(summarize(matrix))
    if skipped:
        click.echo(f"skipped {len(skipped)} bad input(s):", err=True)
        for line in skipped:
            click.echo(f"  {line}", err=True)


def score_locally(
    onnx_model: OnnxModel,
    inputs: tuple[str, ...],
    output: Path,
    fmt: str,
    options: dict[str, Any],
) -> tuple[int, np.ndarray]:
    """Score every input in this process into `output`: (rows, confusion matrix)."""
    skipped, labels = options["skipped"], options["labels"]
    given = load_labels(labels) if labels else None
    paths = [p for p in expand_inputs(list(inputs)) if not record(p, skipped)]
    with open_rows(output, fmt, options["probabilities"]) as out:
        with progress(paths, options["quiet"]) as bar:
            scorer = Scorer(onnx_model, out, options["batch_size"], given, skipped, bar)
            for group in group_inputs(paths):
                scorer.score_input(group)
        if given is not None and len(given) != scorer.rows:
            raise InputError(f"--labels has {len(given)} labels for {scorer.rows} images")
    return scorer.rows, scorer.matrix


def score_on_ray(
    model: Path, inputs: tuple[str, ...], output: str, fmt: str, options: dict[str, Any]
) -> tuple[int, np.ndarray]:
    """Score on a Ray cluster (serving/ray_score.py): (rows, confusion matrix)."""
    if options["labels"]:
        hint = "needs --engine local (Ray reads labels beside IDX files and Parquet's 'label')"
        raise click.BadParameter(hint, param_hint="--labels")
    checked = open_model(model, "cpu", quiet=True)  # a bad model fails here, not in each actor
    try:
        from serving.scoring import ray_engine as ray_score
    except ImportError as err:
        if (err.name or "").partition(".")[0] not in ("ray", "pyarrow"):
            raise
        hint = "--engine ray needs the ray extra: pip install 'digits[ray]'"
        raise click.ClickException(hint) from None
    threshold = checked.threshold  # the sink flags answers under it
    return ray_score.score_dataset(model, list(inputs), output, fmt, threshold=threshold, **options)


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
@click.argument("model", type=click.Path(dir_okay=False, path_type=Path))
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
def score(
    model: Path,
    inputs: tuple[str, ...],
    output: str,
    engine: str,
    **options: Any,
) -> None:
    """Score images in IDX, .npy/.npz, CSV, Parquet or image files (or directories, globs).

    MODEL is an ONNX file with the digits.onnx contract. With --engine ray the same scoring runs
    in Ray Data (IDX, .npy, Parquet and image inputs, local paths or URIs) and OUTPUT is a
    directory of part files with the same columns.
    """
    fmt, started = output_format(output), time.perf_counter()
    exit_on_sigterm()
    options["skipped"] = [] if options.pop("skip_bad") else None
    ray_options = {k: options.pop(k) for k in ("ray_address", "actors")}
    try:
        if engine == "ray":
            rows, matrix = score_on_ray(model, inputs, output, fmt, {**options, **ray_options})
        else:
            path = local_output(output)
            onnx_model = open_model(model, options.pop("provider"), options["quiet"])
            rows, matrix = score_locally(onnx_model, inputs, path, fmt, options)
    except InputError as err:
        raise click.ClickException(str(err)) from None
    seconds = time.perf_counter() - started
    report(rows, matrix, output, seconds, options["skipped"], options["quiet"])
