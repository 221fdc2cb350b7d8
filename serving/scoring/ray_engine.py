"""Batch scoring on Ray Data: `digits score --engine ray`, the local scorer spread over a cluster.

Reads IDX (raw or gzip), .npy, Parquet and image files from local paths (every node must see
them) or any pyarrow filesystem URI (s3://, gs://, hdfs://…) with the readers of inputs.py, in
read tasks that Ray Data fuses into the scoring actors (map_batches over an actor pool, one warm
one-thread ONNX Runtime session per actor, opened from the model's path or URI), so pixels
never pass through the object store; the actors write a directory of Parquet, CSV or JSONL
part files with the local engine's columns and formatting (rows.py), a file per block, and
pass on only their totals, which the driver adds up. A local directory is swapped in
atomically; a URI gets `_SUCCESS` written last. Needs the `ray` extra. Writes nothing else.
score_dataset takes the ScoreOptions that command.py builds.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import sys
import tempfile
import threading
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import ray
from ray.data import ActorPoolStrategy, DataContext
from ray.data.block import BlockMetadata
from ray.data.datasource import Datasource, ReadTask
from ray.data.extensions import ArrowTensorArray

from digits.atomic import atomic_dir
from digits.contract import PIXELS
from digits.idx import GZIP_MAGIC
from digits.images import ImageError, load_image, prepare
from serving.answers import answer_rows, no_digit_reasons
from serving.scoring.inputs import (
    NPY_HEADERS,
    STREAM_ERRORS,
    Chunk,
    InputError,
    expand_inputs,
    kind_of,
    read_idx_images_header,
    read_idx_labels_stream,
    read_idx_stream,
    read_npy_stream,
    read_parquet_stream,
    record,
    row_ids,
    scorable,
)
from serving.scoring.options import ScoreOptions
from serving.scoring.rows import arrow_rows, empty_schema, format_rows, header
from serving.scoring.summary import Totals, tally
from serving.session import load_model

KINDS = {"idx", "npy", "parquet", "image"}  # what the Ray engine reads; .csv/.npz stay local
OWNED = ("part-*", "_SUCCESS")  # what this engine writes into its output directory
TOTALS = ("rows", "matrix", "skipped")  # the columns of the actors' totals rows
PIECE_ROWS = 1 << 15  # rows per read task of a large IDX or Parquet file (~25 MB of pixels):
# also the rows of a part file, and what an actor holds at once
# Ray Data passes its actors' own transformer and context by reference, so Ray's core worker
# logs this ERROR for every actor pool, whatever the arguments (ray-project/ray#57733); the
# driver holds those references for the whole job, so restarts work and the line says nothing.
FALSE_ALARM = b"has constructor arguments in the object store and max_restarts > 0"


def chunk_block(chunk: Chunk) -> pa.Table:
    """A chunk as a Ray block: source, pixels (tensor), label (-1: none), error (null), reason."""
    n = len(chunk.ids)
    pixels = chunk.pixels
    if pixels.dtype != np.uint8:
        # Ray cannot join blocks of different tensor types; pixels are 0–255 (checked) anyway.
        if (pixels != np.round(pixels)).any():
            raise InputError(f"{chunk.ids[0].decode()}…: fractional pixels need --engine local")
        pixels = pixels.astype(np.uint8)
    labels = np.full(n, -1) if chunk.labels is None else np.asarray(chunk.labels)
    return pa.table(
        {
            "source": pa.array(chunk.ids, pa.binary()),
            "pixels": ArrowTensorArray.from_numpy(np.ascontiguousarray(pixels)),
            "label": pa.array(labels.astype(np.int16)),
            "error": pa.nulls(n, pa.string()),
            "reason": pa.array(chunk.reasons or [None] * n, pa.string()),
        }
    )


def error_block(path: Path, message: str) -> pa.Table:
    """One row that carries a skipped input's message to the actor that counts it (blank pixels)."""
    block = chunk_block(Chunk(np.array([os.fsencode(path)]), np.zeros((1, PIXELS), np.uint8)))
    return block.set_column(3, "error", pa.array([message], pa.string()))


def check_gzip(fs: pafs.FileSystem, path: str, name: Path) -> None:
    """Read a gzip file through once, so a damaged one fails before any of its rows is scored."""
    try:
        with fs.open_input_stream(path, compression="gzip") as stream:
            while stream.read(1 << 22):
                pass
    except STREAM_ERRORS as err:
        raise InputError(f"{name}: corrupt gzip data ({err})") from None


@dataclass(frozen=True)
class Piece:
    """What one read task reads of a file: all of it, or rows [start, stop) (Parquet: `groups`)."""

    path: str
    start: int = 0
    stop: int | None = None
    groups: tuple[int, ...] | None = None
    images: tuple[str, ...] = ()  # image files read together (the first is `path`)

    @property
    def files(self) -> tuple[str, ...]:
        """The files the piece reads."""
        return self.images or (self.path,)


def parquet_pieces(path: str, counts: list[int]) -> list[Piece]:
    """Consecutive row groups (of these row counts) in pieces of at least PIECE_ROWS rows."""
    pieces: list[Piece] = []
    start = rows = first = 0
    for i, count in enumerate(counts):
        rows += count
        if rows - start >= PIECE_ROWS or i == len(counts) - 1:
            pieces.append(Piece(path, start, rows, tuple(range(first, i + 1))))
            start, first = rows, i + 1
    return pieces


def plan_pieces(fs: pafs.FileSystem, path: str, name: Path) -> list[Piece]:
    """A large raw IDX or Parquet file as pieces that read tasks score in parallel; other
    files, and any whose layout is not as its header says, whole (its task reports why)."""
    pieces = [Piece(path)]
    with contextlib.suppress(InputError, *STREAM_ERRORS), fs.open_input_file(path) as f:
        kind = kind_of(name)
        if kind == "parquet":
            meta = pq.ParquetFile(f).metadata
            pieces = parquet_pieces(
                path, [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]
            )
        elif kind == "idx" and f.read_at(2, 0) != GZIP_MAGIC:
            f.seek(0)
            n = read_idx_images_header(f, name, f.size())
            pieces = [Piece(path, a, min(a + PIECE_ROWS, n)) for a in range(0, n, PIECE_ROWS)]
    return pieces if len(pieces) > 1 else [Piece(path)]


class DigitsDatasource(Datasource):
    """Ray read tasks over digits inputs, one per piece, each read by a PieceReader.

    A large raw IDX or Parquet file is planned as pieces of rows, so several tasks read it at
    once, and image files as groups of up to a batch, so a directory of pictures is scored in
    batches. Ray Data's public Datasource interface (get_read_tasks,
    estimate_inmemory_data_size).
    """

    def __init__(self, inputs: Inputs, batch: int, skip_bad: bool):
        super().__init__()
        self.inputs, self.batch, self.skip_bad = inputs, batch, skip_bad
        sizes = inputs.sizes
        images = [path for path in sizes if kind_of(inputs.name(path)) == "image"]
        pieces = [
            p
            for path in sizes
            if kind_of(inputs.name(path)) != "image"
            for p in plan_pieces(inputs.filesystems[path], path, inputs.name(path))
        ]
        pieces += [Piece(g[0], images=tuple(g)) for g in batched(images, batch)]
        rows = {p.path: p.stop for p in pieces if p.stop}  # a split file's last piece ends it
        self.pieces = pieces
        self.sizes = [piece_size(p, sizes, rows) for p in pieces]

    @property
    def count(self) -> int:
        """Read tasks: one per piece."""
        return len(self.pieces)

    def estimate_inmemory_data_size(self) -> int | None:
        known = [size for size in self.sizes if size is not None]
        return int(sum(known)) if known else None

    def get_read_tasks(
        self, parallelism: int, per_task_row_limit: int | None = None, data_context: Any = None
    ) -> list[ReadTask]:
        """One task per piece, whatever `parallelism` asks: the pieces are the plan. A task
        carries its own piece's reader, not the whole plan."""
        return [
            ReadTask(
                PieceReader(piece, self.inputs.only(piece.files), self.batch, self.skip_bad),
                BlockMetadata(
                    num_rows=None if piece.stop is None else piece.stop - piece.start,
                    size_bytes=None if size is None else int(size),
                    exec_stats=None,
                    input_files=piece.files,
                ),
                per_task_row_limit=per_task_row_limit,
            )
            for piece, size in zip(self.pieces, self.sizes, strict=True)
        ]


@dataclass(frozen=True)
class PieceReader:
    """One read task: a piece's blocks, one block (one batch) per chunk; a bad file fails or
    becomes a row."""

    piece: Piece
    inputs: Inputs  # the piece's own files only: a task carries nothing of the others
    batch: int
    skip_bad: bool

    @property
    def fs(self) -> pafs.FileSystem:
        """The filesystem the piece's files are on."""
        return self.inputs.filesystems[self.piece.path]

    def __call__(self) -> Iterator[pa.Table]:
        # Random access: sizes are checked before scoring, and Parquet needs it for its footer.
        with self.fs.open_input_file(self.piece.path) as f:
            yield from (self.read_images if self.piece.images else self.read_piece)(f)

    def read_piece(self, f: Any) -> Iterator[pa.Table]:
        """The blocks of an IDX, .npy or Parquet piece; a bad file fails or becomes a row."""
        name = self.inputs.name(self.piece.path)
        try:
            for chunk in self.read_chunks(f, name):
                yield chunk_block(chunk)
        except InputError as err:
            if not self.skip_bad:
                raise
            yield error_block(name, str(err))
        except STREAM_ERRORS as err:
            message = f"{name}: cannot read as {kind_of(name)} ({err})"
            if not self.skip_bad:
                raise InputError(message) from None
            yield error_block(name, message)

    def read_images(self, f: Any) -> Iterator[pa.Table]:
        """A group of image files as one block; a bad one fails or becomes its own row."""
        ids, pixels, reasons = [], [], []
        for path in self.piece.images:
            name = self.inputs.name(path)
            try:
                data = f.read() if path == self.piece.path else read_all(self.fs, path)
                prepared = prepare(load_image(data))
            except (ImageError, *STREAM_ERRORS) as err:
                message = f"{name}: {err}"
                if not self.skip_bad:
                    raise InputError(message) from None
                yield error_block(name, message)
                continue
            ids.append(os.fsencode(name))
            pixels.append(prepared.pixels.reshape(PIXELS))
            reasons.append(prepared.reason)
        if ids:
            yield chunk_block(Chunk(np.array(ids, dtype="S"), np.stack(pixels), reasons=reasons))

    def read_chunks(self, f: Any, name: Path) -> Iterator[Chunk]:
        """Chunks of the piece, checked as far as its kind allows before the first is yielded."""
        piece, kind = self.piece, kind_of(name)
        if kind == "parquet":
            yield from read_parquet_stream(f, name, self.batch, piece.groups, piece.start)
        elif kind == "npy":
            version = np.lib.format.read_magic(f)
            if version in NPY_HEADERS:  # read_npy_stream names any other version
                shape, _, dtype = NPY_HEADERS[version](f)
                expected = f.tell() + int(np.prod(shape)) * dtype.itemsize
                if f.size() != expected:
                    raise InputError(f"{name}: file is {f.size()} bytes, header says {expected}")
            f.seek(0)
            start = 0
            for x in read_npy_stream(f, name, self.batch):
                yield Chunk(row_ids(name, start, len(x)), x)
                start += len(x)
        else:
            yield from self.read_idx(f, name)

    def read_idx(self, f: Any, name: Path) -> Iterator[Chunk]:
        """IDX images (raw or gzip, sniffed), with the IDX labels beside them if any."""
        piece, fs, path = self.piece, self.fs, self.piece.path
        size: int | None = f.size()
        if f.read_at(2, 0) == GZIP_MAGIC:
            check_gzip(fs, path, name)
            f, size = fs.open_input_stream(path, compression="gzip"), None
        else:
            f.seek(0)  # read_at leaves the implicit position unset
        beside = labels_beside(fs, path)

        def labels() -> np.ndarray | None:
            if beside is None:
                return None
            compression = "gzip" if beside.endswith(".gz") else None
            with fs.open_input_stream(beside, compression=compression) as stream:
                return read_idx_labels_stream(stream, self.inputs.name(beside))

        rows = None if piece.stop is None else (piece.start, piece.stop)
        yield from read_idx_stream(f, name, self.batch, size, labels, rows)


def batched(items: list[str], n: int) -> Iterator[list[str]]:
    """Consecutive runs of up to n items."""
    return (items[i : i + n] for i in range(0, len(items), n))


def piece_size(piece: Piece, sizes: dict[str, Any], rows: dict[str, int]) -> float | None:
    """Bytes a piece reads, for Ray's estimates: its share of its file, or its files' sum."""
    if piece.images:
        return sum(sizes[p] or 0 for p in piece.images)
    size = sizes[piece.path]
    if not size or piece.stop is None:
        return size
    return size * (piece.stop - piece.start) / rows[piece.path]


def read_all(fs: pafs.FileSystem, path: str) -> bytes:
    """A whole (small) file's bytes on any filesystem."""
    with fs.open_input_stream(path) as stream:
        return stream.read()


def wanted(path: str) -> bool:
    """Whether a file in a URI's directory is an input this engine reads."""
    return scorable(Path(path)) and kind_of(Path(path)) in KINDS


def labels_beside(fs: Any, path: str) -> str | None:
    """The IDX labels file beside IDX images on any filesystem, like inputs.labels_beside."""
    head, _, name = path.rpartition("/")
    twin = name.replace("images", "labels").replace("idx3", "idx1")
    for candidate in (twin, twin.removesuffix(".gz"), twin + ".gz"):
        if candidate != name:
            full = f"{head}/{candidate}" if head else candidate
            if fs.get_file_info(full).type == pafs.FileType.File:
                return full
    return None


@contextlib.contextmanager
def model_file(model: str) -> Iterator[str]:
    """A local path to the model: the path itself, or a temp copy of a URI's bytes."""
    if "://" not in model:
        yield model
        return
    fs, path = pafs.FileSystem.from_uri(model)
    with tempfile.TemporaryDirectory() as tmp:
        local = os.path.join(tmp, "model.onnx")
        with open(local, "wb") as out:
            out.write(read_all(fs, path))
        yield local


@dataclass(frozen=True)
class PartFiles:
    """Where and how the actors write: a filesystem, the output root, the format, and the
    model's threshold (answers under it are flagged)."""

    fs: pafs.FileSystem
    root: str
    fmt: str
    all_p: bool
    threshold: float

    def path(self, rows: pa.Table) -> str:
        """The part file of these rows, named by its first row: a retried block rewrites the
        same file, and no two blocks share a first row (each input is read once)."""
        first = rows.column("source")[0].as_py()
        return f"{self.root}/part-{hashlib.sha256(first).hexdigest()[:20]}.{self.fmt}"

    @contextlib.contextmanager
    def open(self, path: str) -> Iterator[Any]:
        """An output stream (text formats, header written) or a Parquet writer for one part."""
        with self.fs.open_output_stream(path) as stream:
            if self.fmt != "parquet":
                stream.write(header(self.fmt, self.all_p))
                yield stream
                return
            with pq.ParquetWriter(stream, empty_schema(self.all_p)) as writer:
                yield writer


class ScoreWriter:
    """A map_batches actor: one warm one-thread ONNX Runtime session, opened from the model's
    path or URI in the constructor (so nothing large goes through the object store). It
    scores each block it is handed, writes the block's rows to a part file of its own and
    passes on only the block's totals, so no write task, and no second copy of the scores,
    is needed."""

    def __init__(self, model: str, provider: str, batch: int, parts: PartFiles) -> None:
        with model_file(model) as path:
            self.model = load_model(path, provider=provider, threads=1)  # one CPU per actor
        self.model.predict(np.zeros((1, PIXELS), np.float32))  # the first run allocates
        self.batch, self.parts = batch, parts

    def __call__(self, block: pa.Table) -> pa.Table:
        """Score and write a read task's rows `batch` at a time (Ray Data hands over a fused
        read's output whole, one piece: up to ~25 MB of pixels); one row of totals."""
        totals, good, errors = Totals(), block, block.column("error")
        if errors.null_count < len(errors):  # a filter copies the block: only when needed
            bad = errors.is_valid()
            totals.skipped += block.filter(bad).column("error").to_pylist()
            good = block.filter(pa.compute.invert(bad))
        if len(good):
            with self.parts.open(self.parts.path(good)) as writer:
                for start in range(0, good.num_rows, self.batch):
                    self.write(writer, good.slice(start, self.batch), totals)
        return totals_row(totals)

    def write(self, writer: Any, batch: pa.Table, totals: Totals) -> None:
        """Score a batch, write its formatted rows, count the labelled ones."""
        pixels = column_array(batch, "pixels").to_numpy().reshape(-1, PIXELS)  # zero-copy
        _, probabilities = self.model.predict(pixels.astype(np.float32))
        given = batch.column("reason")
        listed = given.to_pylist() if given.null_count < len(given) else None
        answers = answer_rows(probabilities, no_digit_reasons(pixels, listed), self.parts.threshold)
        ids = batch.column("source").to_numpy().astype("S")
        if self.parts.fmt == "parquet":
            writer.write_table(arrow_rows(ids, probabilities, answers, self.parts.all_p))
        else:
            writer.write(format_rows(ids, probabilities, answers, self.parts.fmt, self.parts.all_p))
        labels = batch.column("label").to_numpy()
        known = labels >= 0
        if known.any():
            totals.matrix += tally(labels[known], answers.digits[known], answers.answered[known])
        totals.rows += batch.num_rows


def column_array(table: pa.Table, name: str) -> pa.Array:
    """A column as one array: its only chunk as it is (no copy), else the chunks joined."""
    column = table.column(name)
    return column.chunk(0) if column.num_chunks == 1 else column.combine_chunks()


def totals_row(totals: Totals) -> pa.Table:
    """A block's totals as the one-row table its actor passes on."""
    values = ([totals.rows], [totals.matrix.reshape(-1).tolist()], [totals.skipped])
    types = (pa.int64(), pa.list_(pa.int64()), pa.list_(pa.string()))
    return pa.table([pa.array(v, t) for v, t in zip(values, types, strict=True)], names=TOTALS)


def add_rows(totals: Totals, rows: pa.Table) -> None:
    """Fold the actors' totals rows into these."""
    shape = totals.matrix.shape
    for count, matrix, skipped in zip(*(rows.column(n).to_pylist() for n in TOTALS), strict=True):
        totals.add(Totals(count, np.asarray(matrix, np.int64).reshape(shape), skipped))


@dataclass
class Inputs:
    """The files to score, in order: each one's filesystem, size, and name in the output."""

    filesystems: dict[str, pafs.FileSystem] = field(default_factory=dict)
    sizes: dict[str, int | None] = field(default_factory=dict)
    names: dict[str, str] = field(default_factory=dict)  # local files: the path as given

    def add(self, fs: pafs.FileSystem, info: pafs.FileInfo, name: str | None = None) -> None:
        """One file, by its FileInfo on `fs`."""
        self.filesystems[info.path], self.sizes[info.path] = fs, info.size
        if name is not None:
            self.names[info.path] = name

    def name(self, path: str) -> Path:
        """A file's name as the user gave it (local paths), or its URI path."""
        return Path(self.names.get(path, path))

    def only(self, paths: tuple[str, ...]) -> Inputs:
        """These files' entries alone."""
        return Inputs(
            {p: self.filesystems[p] for p in paths},
            {p: self.sizes[p] for p in paths},
            {p: self.names[p] for p in paths if p in self.names},
        )


def uri_files(uri: str) -> tuple[pafs.FileSystem | None, list[pafs.FileInfo | InputError]]:
    """A URI's file, or the files its directory holds that this engine reads (not those of its
    subdirectories, as for a local directory); problems as InputError."""
    try:
        fs, path = pafs.FileSystem.from_uri(uri)
        info = fs.get_file_info(path)
        if info.type == pafs.FileType.Directory:
            found = [
                i
                for i in fs.get_file_info(pafs.FileSelector(path))
                if i.type == pafs.FileType.File and wanted(i.path)
            ]
            return fs, sorted(found, key=lambda i: i.path) or [
                InputError(f"{uri}: directory has no scorable files")
            ]
    except (pa.ArrowException, OSError) as err:  # an unknown scheme, a missing bucket
        return None, [InputError(f"{uri}: {err}")]
    if info.type == pafs.FileType.File:
        return fs, [info]
    return fs, [InputError(f"{uri}: no such file or directory")]


def plan_inputs(args: list[str], skipped: list[str] | None) -> Inputs:
    """The files the arguments name, directories expanded: local ones by absolute path."""
    inputs, local = Inputs(), pafs.LocalFileSystem()
    for arg in args:
        if "://" in arg:
            fs, found = uri_files(arg)
            for item in found:
                if not record(item, skipped) and not record(refused(Path(item.path)), skipped):
                    inputs.add(fs, item)
            continue
        for item in expand_inputs([arg]):
            if not record(item, skipped) and not record(refused(item), skipped):
                inputs.add(local, local.get_file_info(os.path.abspath(item)), str(item))
    if not inputs.sizes:
        raise InputError("no inputs left to score")
    return inputs


def refused(path: Path) -> Path | InputError:
    """The path, or an InputError for a kind the Ray engine does not read."""
    if kind_of(path) in KINDS:
        return path
    return InputError(f"{path}: .{kind_of(path)} inputs need --engine local")


@contextlib.contextmanager
def output_root(output: str) -> Iterator[tuple[pafs.FileSystem, str]]:
    """Where part files go: a temp dir swapped in for a local output, or the URI itself."""
    if "://" not in output:
        with atomic_dir(output, OWNED, "digits score --engine ray") as tmp:
            yield pafs.LocalFileSystem(), os.path.abspath(tmp)  # tasks run in other dirs
        return
    fs, root = pafs.FileSystem.from_uri(output)
    if fs.get_file_info(pafs.FileSelector(root, allow_not_found=True)):
        raise InputError(f"{output}: not empty; choose a new location")
    fs.create_dir(root)
    yield fs, root
    fs.open_output_stream(f"{root}/_SUCCESS").close()  # object stores have no atomic rename


def one_line(err: BaseException) -> InputError:
    """What a task raised, however Ray wrapped it, as one line for the CLI."""
    seen: set[int] = set()
    while id(err) not in seen:
        seen.add(id(err))
        cause = getattr(err, "cause", None)  # RayTaskError keeps the task's own exception here
        if isinstance(cause, BaseException):
            err = cause
        elif isinstance(err, InputError):
            return err
        elif (inner := err.__cause__ or err.__context__) is not None:
            err = inner
        else:
            break
    first = str(err).strip().splitlines()[0] if str(err).strip() else ""
    return InputError(f"the Ray job failed: {type(err).__name__}: {first}")


@contextlib.contextmanager
def stderr_without(marker: bytes) -> Iterator[None]:
    """This process's stderr (fd 2, where Ray's C++ core worker logs) less the lines holding
    `marker`; everything else passes through as it comes, progress bars included."""
    sys.stderr.flush()
    saved, (read, write) = os.dup(2), os.pipe()
    os.dup2(write, 2)
    os.close(write)
    target = os.dup(saved)  # the pump's own: `saved` is closed when the block ends

    def pump() -> None:
        with os.fdopen(read, "rb", buffering=0) as pipe, os.fdopen(target, "wb", 0) as out:
            rest = b""
            while chunk := pipe.read(1 << 16):
                *lines, rest = re.split(rb"(?<=[\r\n])", rest + chunk)
                out.write(b"".join(line for line in lines if marker not in line))
            out.write(rest)

    thread = threading.Thread(target=pump, name="stderr-filter", daemon=True)
    thread.start()
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)  # the pipe's last writer closes: the pump drains it and ends
        os.close(saved)
        thread.join(timeout=5)


def connect(address: str | None, quiet: bool) -> None:
    """Join the cluster at `address` (or $RAY_ADDRESS), else start a local Ray for this run."""
    context = DataContext.get_current()
    # Off a terminal Ray logs progress as INFO lines instead of bars: too much for a command.
    context.enable_progress_bars = not quiet and sys.stderr.isatty()
    context.print_on_execution_start = False
    logging.getLogger("ray.data").setLevel(logging.CRITICAL)  # our summary says what happened
    # A small input has fewer read or write tasks than may run at once; Ray's advice on that
    # (a UserWarning naming its internals) is no news to whoever runs the command.
    warnings.filterwarnings("ignore", "The maximum number of concurrent tasks", UserWarning)
    ray.init(
        address=address,
        include_dashboard=False if not (address or os.environ.get("RAY_ADDRESS")) else None,
        logging_level=logging.ERROR if quiet else logging.WARNING,
        log_to_driver=not quiet,
        configure_logging=True,
    )


def model_uri(model: str | Path) -> str:
    """The model as every actor opens it: a URI as given, a local path made absolute."""
    return str(model) if "://" in str(model) else os.path.abspath(model)


def score_dataset(
    model: str | Path, inputs: list[str], output: str, options: ScoreOptions, threshold: float
) -> Totals:
    """Score inputs on Ray into a directory of part files; `threshold` is the model's."""
    skipped = [] if options.skip_bad else None
    planned = plan_inputs(inputs, skipped)
    with stderr_without(FALSE_ALARM):
        totals = run_job(model, planned, output, options, threshold)
    # Inputs the planner skipped, then those the read tasks met.
    return Totals(totals.rows, totals.matrix, (skipped or []) + totals.skipped)


def run_job(
    model: str | Path,
    inputs: Inputs,
    output: str,
    options: ScoreOptions,
    threshold: float,
) -> Totals:
    """Connect, score through the actor pool into the output, disconnect: the actors' totals."""
    connect(options.ray_address, options.quiet)
    try:
        source = DigitsDatasource(inputs, options.batch_size, options.skip_bad)
        # No more actors than read tasks: each would only start, load the model and wait.
        pool = min(
            options.actors or max(1, int(ray.cluster_resources().get("CPU", 1))), source.count
        )
        # One read task per piece and no batch size here (the actor slices its batches): Ray
        # Data then fuses the reads into the actors, so pixels never pass through the object
        # store, and the actors write what they score, so only their totals do.
        totals = Totals()
        with output_root(output) as (fs, root):
            parts = PartFiles(fs, root, options.fmt, options.probabilities, threshold)
            scored = ray.data.read_datasource(source, override_num_blocks=source.count).map_batches(
                ScoreWriter,
                fn_constructor_kwargs={
                    "model": model_uri(model),
                    "provider": options.provider,
                    "batch": options.batch_size,
                    "parts": parts,
                },
                batch_size=None,
                batch_format="pyarrow",
                zero_copy_batch=True,
                compute=ActorPoolStrategy(size=pool),
                num_cpus=1,
            )
            try:
                for rows in scored.iter_batches(batch_size=None, batch_format="pyarrow"):
                    add_rows(totals, rows)
            except Exception as err:  # Ray wraps what its tasks raise
                raise one_line(err) from None
    finally:
        ray.shutdown()
    return totals
