"""Input readers for `digits score`: stream images from IDX, .npy/.npz, CSV and image files.

Reads IDX image files (raw or gzip), .npy/.npz arrays, CSV rows of PIXELS pixels, Parquet
(column `pixels`, optional `label`; needs pyarrow) and PNG/JPEG/BMP/GIF/WebP files, given as files,
directories or globs; writes nothing. Every reader yields Chunks of at most `batch` rows, so memory
stays bounded whatever the input size. Bad input raises InputError. The IDX, .npy and Parquet
readers also take an open stream, which is how the Ray engine (ray_engine.py) uses them.
"""

from __future__ import annotations

import glob
import gzip
import itertools
import os
import zipfile
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from digits import idx
from digits.contract import PIXELS, SIDE
from digits.images import ImageError, load_image, pixel_problem, prepare

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"}
ARRAY_SUFFIXES = {".npy", ".npz", ".csv", ".parquet"}
NPY_HEADERS = {
    (1, 0): np.lib.format.read_array_header_1_0,
    (2, 0): np.lib.format.read_array_header_2_0,
}
STREAM_ERRORS = (OSError, EOFError, zlib.error, ValueError, zipfile.BadZipFile)
# Parquet input columns: our file format's names, kept even if the ONNX graph's input is renamed.
PIXELS_COLUMN, LABEL_COLUMN = "pixels", "label"


class InputError(ValueError):
    """An input that cannot be scored: missing, unknown format, corrupt or truncated."""


@dataclass
class Chunk:
    """Up to `batch` images: ids (bytes 'file:index'), pixels (n, PIXELS) 0–255, labels or None."""

    ids: np.ndarray
    pixels: np.ndarray
    labels: np.ndarray | None = None
    reasons: list[str | None] | None = None  # image files: why one holds no digit, else None


def kind_of(path: Path) -> str:
    """'image', 'npy', 'npz', 'csv', 'parquet' or 'idx' (anything else: IDX, raw or gzip)."""
    suffix = path.suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        return "image"
    return suffix[1:] if suffix in ARRAY_SUFFIXES else "idx"


def scorable(path: Path) -> bool:
    """Whether a file found in a directory is an input (IDX image files or known suffixes)."""
    suffix = path.suffix.lower()
    return suffix in IMAGE_SUFFIXES | ARRAY_SUFFIXES or "idx3" in path.name


def expand_inputs(args: list[str]) -> Iterator[Path | InputError]:
    """Files named by the arguments, directories and globs expanded; problems as InputError."""
    for arg in args:
        path = Path(arg)
        if path.is_dir():
            files = sorted(p for p in path.iterdir() if p.is_file() and scorable(p))
            yield from files or [InputError(f"{arg}: directory has no scorable files")]
        elif path.exists():
            yield path
        elif glob.has_magic(arg):
            matches = sorted(Path(p) for p in glob.glob(arg, recursive=True) if Path(p).is_file())
            yield from matches or [InputError(f"{arg}: no files match")]
        else:
            yield InputError(f"{arg}: no such file or directory")


def record(item: Path | InputError, skipped: list[str] | None) -> bool:
    """True for a bad input that is skipped (listed in `skipped`); raise it when skipping is off."""
    if not isinstance(item, InputError):
        return False
    if skipped is None:
        raise item
    skipped.append(str(item))
    return True


def row_ids(path: Path, start: int, n: int) -> np.ndarray:
    """Bytes ids b'path:index' for rows start..start+n of one file."""
    return np.strings.add(os.fsencode(path) + b":", np.arange(start, start + n).astype("S"))


def read_exact(stream: IO[bytes], size: int, path: Path) -> bytes:
    """Exactly `size` bytes from the stream, or InputError naming the file as truncated."""
    data = stream.read(size)
    if len(data) != size:
        raise InputError(f"{path}: truncated (wanted {size} more bytes, got {len(data)})")
    return data


def read_idx_header(stream: IO[bytes], path: Path) -> tuple[int, ...]:
    """The shape in an IDX header of unsigned bytes; the stream is left at the data."""
    try:
        dtype, shape = idx.read_header(stream, str(path))
    except idx.IdxError as err:
        raise InputError(str(err)) from None
    if dtype != np.uint8:
        raise InputError(f"{path}: not an IDX file of unsigned bytes (dtype {dtype})")
    return shape


def read_idx_labels_stream(stream: IO[bytes], path: Path) -> np.ndarray:
    """All labels of an open IDX label stream (idx1, raw)."""
    shape = read_idx_header(stream, path)
    if len(shape) != 1:
        raise InputError(f"{path}: expected a 1-D IDX label file, got shape {shape}")
    labels = np.frombuffer(read_exact(stream, shape[0], path), np.uint8)
    if stream.read(1):
        raise InputError(f"{path}: trailing bytes after {shape[0]} labels")
    return labels


def read_idx_labels(path: Path) -> np.ndarray:
    """All labels of an IDX label file (idx1, raw or gzip)."""
    try:
        with idx.open_idx(path) as stream:
            return read_idx_labels_stream(stream, path)
    except STREAM_ERRORS as err:
        raise InputError(f"{path}: cannot read labels ({err})") from None


def labels_beside(path: Path) -> Path | None:
    """The IDX labels beside IDX images: t10k-images-idx3-ubyte -> t10k-labels-idx1-ubyte."""
    name = path.name.replace("images", "labels").replace("idx3", "idx1")
    for candidate in (name, name.removesuffix(".gz"), name + ".gz"):
        if candidate != path.name and (path.parent / candidate).is_file():
            return path.parent / candidate
    return None


def read_idx_stream(
    stream: IO[bytes],
    path: Path,
    batch: int,
    size: int | None = None,
    labels: Callable[[], np.ndarray | None] = lambda: None,
    rows: tuple[int, int] | None = None,
) -> Iterator[Chunk]:
    """Stream IDX images from an open (raw) stream; `size`, when known, is checked first.

    `rows` = (first, stop) reads only those images, seeking past the others (a seekable stream).
    """
    n = read_idx_images_header(stream, path, size)
    given = labels()  # only once the images' header is known to be good
    if given is not None and len(given) != n:
        raise InputError(f"{path}: {len(given)} labels beside it for {n} images")
    first, stop = rows or (0, n)
    if first:
        stream.seek(first * PIXELS, os.SEEK_CUR)
    for start in range(first, stop, batch):
        count = min(batch, stop - start)
        pixels = np.frombuffer(read_exact(stream, count * PIXELS, path), np.uint8)
        part = None if given is None else given[start : start + count]
        yield Chunk(row_ids(path, start, count), pixels.reshape(count, PIXELS), part)
    if stop == n and stream.read(1):
        raise InputError(f"{path}: trailing bytes after {n} images")


def read_idx_images_header(stream: IO[bytes], path: Path, size: int | None = None) -> int:
    """The number of images an IDX image file's header declares, checked: N×SIDE×SIDE (or N×PIXELS)
    unsigned bytes and, when `size` is known, a file of that size. The stream is left at them."""
    shape = read_idx_header(stream, path)
    if int(np.prod(shape[1:])) != PIXELS:
        raise InputError(f"{path}: IDX shape {shape} is not N×{SIDE}×{SIDE} images")
    if size is not None and size != (expected := 4 + 4 * len(shape) + int(np.prod(shape))):
        raise InputError(f"{path}: file is {size} bytes, header says {expected}")
    return shape[0]


def read_idx(path: Path, batch: int) -> Iterator[Chunk]:
    """Stream an IDX image file (N×SIDE×SIDE or N×PIXELS bytes), with the labels beside it."""
    with idx.open_idx(path) as stream:
        # A regular raw file's size is checked before scoring; gzip and pipes are checked as read.
        raw = not isinstance(stream, gzip.GzipFile) and path.is_file()
        beside = labels_beside(path)
        yield from read_idx_stream(
            stream,
            path,
            batch,
            path.stat().st_size if raw else None,
            lambda: read_idx_labels(beside) if beside else None,
        )


def checked(pixels: np.ndarray, path: Path, start: int) -> np.ndarray:
    """Rows from `start` of a file, or InputError naming the first NaN/inf/out-of-range row."""
    if problem := pixel_problem(pixels, start):
        raise InputError(f"{path}: {problem}")
    return pixels


def read_npy_stream(stream: IO[bytes], path: Path, batch: int) -> Iterator[np.ndarray]:
    """Stream the rows of a .npy array of images (N×PIXELS or N×SIDE×SIDE), `batch` at a time."""
    version = np.lib.format.read_magic(stream)
    if version not in NPY_HEADERS:
        raise InputError(f"{path}: unsupported .npy format version {version}")
    shape, fortran, dtype = NPY_HEADERS[version](stream)
    if fortran or dtype.kind not in "uif" or len(shape) < 2 or np.prod(shape[1:]) != PIXELS:
        raise InputError(
            f"{path}: expected a C-order numeric N×{PIXELS} array, got {dtype} {shape}"
        )
    for start in range(0, shape[0], batch):
        rows = min(batch, shape[0] - start)
        data = read_exact(stream, rows * PIXELS * dtype.itemsize, path)
        yield checked(np.frombuffer(data, dtype).reshape(rows, PIXELS), path, start)


def read_npy(path: Path, batch: int) -> Iterator[Chunk]:
    """Stream a .npy file of images."""
    with path.open("rb") as stream:
        start = 0
        for pixels in read_npy_stream(stream, path, batch):
            yield Chunk(row_ids(path, start, len(pixels)), pixels)
            start += len(pixels)


def read_npz(path: Path, batch: int) -> Iterator[Chunk]:
    """Stream array `x` (or the only array) of an .npz, with labels `y` when present."""
    with zipfile.ZipFile(path) as archive:
        names = [n.removesuffix(".npy") for n in archive.namelist()]
        key = "x" if "x" in names else names[0] if len(names) == 1 else None
        if key is None:
            raise InputError(f"{path}: no array 'x' among {', '.join(names)}")
        labels = None
        if key == "x" and "y" in names:
            with archive.open("y.npy") as f:
                labels = np.load(f)
        with archive.open(f"{key}.npy") as stream:
            start = 0
            for pixels in read_npy_stream(stream, path, batch):
                part = None if labels is None else labels[start : start + len(pixels)]
                yield Chunk(row_ids(path, start, len(pixels)), pixels, part)
                start += len(pixels)
        if labels is not None and len(labels) != start:
            raise InputError(f"{path}: {len(labels)} labels in 'y' for {start} images in 'x'")


def is_header(fields: list[str]) -> bool:
    """A first CSV row of names, or of the pixel columns' numbers (0…PIXELS-1 or 1…PIXELS)."""
    try:
        values = np.asarray(fields[-PIXELS:], dtype=np.float64)
    except ValueError:
        return True
    # Only a numbered header counts: a data row with a pixel over 255 is bad data, not a header.
    return bool(values[0] in (0, 1) and (np.diff(values) == 1).all())


def read_csv(path: Path, batch: int) -> Iterator[Chunk]:
    """Stream CSV rows of PIXELS pixels; a header row and a leading label column are detected."""
    with path.open() as f:
        first = f.readline()
        fields = first.strip().split(",")
        if len(fields) not in (PIXELS, PIXELS + 1):
            raise InputError(f"{path}: {len(fields)} columns; expected {PIXELS} pixels (+1 label)")
        has_label = len(fields) == PIXELS + 1
        lines = f if is_header(fields) else itertools.chain([first], f)
        start = 0
        while block := list(itertools.islice(lines, batch)):
            try:
                table = np.loadtxt(block, delimiter=",", dtype=np.float32, ndmin=2)
            except ValueError as err:
                raise InputError(f"{path}: bad CSV row after row {start} ({err})") from None
            if table.shape[1] != len(fields):
                raise InputError(f"{path}: rows after row {start} have {table.shape[1]} columns")
            labels = table[:, 0].astype(np.int64) if has_label else None
            pixels = checked(table[:, 1:] if has_label else table, path, start)
            yield Chunk(row_ids(path, start, len(table)), pixels, labels)
            start += len(table)


def read_images(paths: list[Path], batch: int, skipped: list[str] | None) -> Iterator[Chunk]:
    """Decode image files into MNIST pixels, `batch` at a time; bad ones go to `skipped`."""
    for group in (paths[i : i + batch] for i in range(0, len(paths), batch)):
        ids, pixels, reasons = [], [], []
        for path in group:
            try:
                prepared = prepare(load_image(path.read_bytes()))
                pixels.append(prepared.pixels.reshape(PIXELS))
                reasons.append(prepared.reason)
                ids.append(os.fsencode(path))
            except (ImageError, OSError) as err:
                message = f"{path}: {err.strerror if isinstance(err, OSError) else err}"
                if skipped is None:
                    raise InputError(message) from None
                skipped.append(message)
        if ids:
            yield Chunk(np.array(ids, dtype="S"), np.stack(pixels), reasons=reasons)


def count_rows(path: Path) -> int | None:
    """Images in one input when its header tells cheaply (images, IDX, .npy), else None."""
    kind = kind_of(path)
    if not path.is_file():  # a pipe or FIFO can be read only once: by the scorer
        return None
    try:
        if kind == "image":
            return 1
        with idx.open_idx(path) if kind == "idx" else path.open("rb") as f:
            if kind == "idx":
                return read_idx_header(f, path)[0]
            if kind == "npy":
                return NPY_HEADERS[np.lib.format.read_magic(f)](f)[0][0]
    except (*STREAM_ERRORS, KeyError, IndexError):
        pass  # the reader reports it properly when the file is scored
    return None


def row_count(paths: list[Path]) -> int | None:
    """Images in all inputs, or None when any count is unknown without reading it all."""
    counts = [count_rows(p) for p in paths]
    return None if None in counts else sum(counts)


def import_pyarrow_parquet() -> Any:
    """pyarrow.parquet, or InputError saying which extra brings it."""
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise InputError("Parquet needs pyarrow: pip install 'digits[parquet]'") from None
    return pq


def parquet_pixels(column: Any, path: Path, start: int) -> np.ndarray:
    """A Parquet/Arrow list column of PIXELS numbers per row -> (n, PIXELS) array, checked."""
    import pyarrow as pa

    column = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if not pa.types.is_list(column.type) and not pa.types.is_fixed_size_list(column.type):
        raise InputError(
            f"{path}: column '{PIXELS_COLUMN}' is {column.type}, not a list of {PIXELS} numbers"
        )
    if column.null_count or (column.value_lengths().to_numpy() != PIXELS).any():
        raise InputError(f"{path}: a row after row {start} has no {PIXELS} pixels")
    values = column.flatten().to_numpy(zero_copy_only=False)
    if values.dtype.kind not in "uif":
        raise InputError(f"{path}: column '{PIXELS_COLUMN}' holds {values.dtype}, not numbers")
    return checked(values.reshape(len(column), PIXELS), path, start)


def read_parquet_stream(
    source: Any, path: Path, batch: int, groups: Sequence[int] | None = None, start: int = 0
) -> Iterator[Chunk]:
    """Stream a Parquet file (a path or an open pyarrow file): PIXELS_COLUMN, maybe LABEL_COLUMN.

    `groups` reads only those row groups, the first of which begins at row `start` of the file.
    """
    pq = import_pyarrow_parquet()
    try:
        # Without pre-buffering, pyarrow reads column chunks as it goes instead of whole row
        # groups ahead (1M images: 120 MiB instead of 860 MiB, and faster).
        table = pq.ParquetFile(source, pre_buffer=False, buffer_size=1 << 20)
    except Exception as err:  # pyarrow's ArrowInvalid and OSError share no narrower base
        raise InputError(f"{path}: not a Parquet file ({err})") from None
    names = table.schema_arrow.names
    if PIXELS_COLUMN not in names:
        raise InputError(f"{path}: no column '{PIXELS_COLUMN}' among {', '.join(names)}")
    columns = [PIXELS_COLUMN] + [LABEL_COLUMN] * (LABEL_COLUMN in names)
    try:
        parts = table.iter_batches(
            batch_size=batch, row_groups=groups, columns=columns, use_threads=False
        )
        for part in parts:
            pixels = parquet_pixels(part.column(PIXELS_COLUMN), path, start)
            labels = part.column(LABEL_COLUMN).to_numpy() if LABEL_COLUMN in names else None
            yield Chunk(row_ids(path, start, len(pixels)), pixels, labels)
            start += len(pixels)
    except InputError:
        raise
    except Exception as err:  # a damaged page shows only when read
        raise InputError(f"{path}: cannot read Parquet after row {start} ({err})") from None


def read_parquet(path: Path, batch: int) -> Iterator[Chunk]:
    """Stream a Parquet file of images."""
    yield from read_parquet_stream(path, path, batch)


READERS = {
    "idx": read_idx,
    "npy": read_npy,
    "npz": read_npz,
    "csv": read_csv,
    "parquet": read_parquet,
}


def read_file(path: Path, batch: int) -> Iterator[Chunk]:
    """Stream one IDX/.npy/.npz/CSV file; any decoding failure becomes InputError."""
    try:
        yield from READERS[kind_of(path)](path, batch)
    except InputError:
        raise
    except STREAM_ERRORS as err:
        raise InputError(f"{path}: cannot read as {kind_of(path)} ({err})") from None


def load_labels(path: Path) -> np.ndarray:
    """Labels 0–9 from an IDX label file, a .npy file, or text with one label per line."""
    try:
        if path.suffix == ".npy":
            labels = np.load(path)
        elif path.suffix in {".txt", ".csv"}:
            labels = np.loadtxt(path, dtype=np.int64, ndmin=1)
        else:
            labels = read_idx_labels(path)
    except (OSError, ValueError) as err:
        raise InputError(f"{path}: cannot read labels ({err})") from None
    if labels.ndim != 1 or labels.size and (labels.min() < 0 or labels.max() > 9):
        raise InputError(f"{path}: labels must be one digit 0–9 per image")
    return labels.astype(np.int64)
