"""Output rows of `digits score` (CSV, JSONL or Parquet): what both engines write through.

One row per image: source id, digit, confidence, optionally p0…p9, the reason for no digit and the
low-confidence flag, with the same columns in every format. Text rows are formatted as whole numpy
byte matrices, never row by row in Python; Parquet rows are Arrow tables of exact float32. The
local engine (local.py) writes one file through open_rows, atomically; the Ray engine
(ray_engine.py) writes its part files with header, format_rows and arrow_rows. Writes only the
file it is given.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import click
import numpy as np

from digits.atomic import atomic_open, atomic_path
from digits.contract import CLASSES, LABELS
from serving.answers import Answers, answer_rows

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
    probabilities = [f"p{label}" for label in LABELS] * all_p
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
        columns += [
            pa.array(probabilities[:, k].astype(np.float32), mask=none) for k in range(CLASSES)
        ]
    columns += [pa.array(answers.reasons, pa.string()), pa.array(answers.low, pa.bool_())]
    return pa.table(columns, names=column_names(all_p))


def empty_schema(all_p: bool) -> Any:
    """The Arrow schema of the output rows."""
    answers = answer_rows(np.zeros((0, CLASSES), np.float32), [], 0.0)
    return arrow_rows(np.array([], "S1"), np.zeros((0, CLASSES), np.float32), answers, all_p).schema


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
