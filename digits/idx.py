"""The IDX file format of MNIST: read (raw or gzip) with full validation, and write.

Layout: two zero bytes, a dtype code, the number of dimensions, then one big-endian
uint32 per dimension, then the data in row-major order (big-endian for multi-byte types).
"""

from __future__ import annotations

import gzip
import io
import struct
import zlib
from pathlib import Path
from typing import IO

import numpy as np

from digits.errors import DataError

DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
GZIP_MAGIC = b"\x1f\x8b"


class IdxError(DataError):
    """An IDX file is corrupt, truncated or not IDX at all."""


def read_header(stream: IO[bytes], name: str = "<bytes>") -> tuple[np.dtype, tuple[int, ...]]:
    """Read and check an IDX header from a stream, leaving it at the data: (dtype, shape)."""
    head = stream.read(4)
    if len(head) < 4:
        raise IdxError(f"{name}: too short to be an IDX file ({len(head)} bytes)")
    zero, code, ndim = struct.unpack(">HBB", head)
    if zero != 0:
        raise IdxError(f"{name}: not an IDX file (magic 0x{head.hex()}, expected 0x0000 + dtype)")
    if code not in DTYPES:
        raise IdxError(f"{name}: unknown IDX dtype code 0x{code:02x}")
    if ndim == 0:
        raise IdxError(f"{name}: IDX header declares zero dimensions")
    dims = stream.read(4 * ndim)
    if len(dims) < 4 * ndim:
        raise IdxError(f"{name}: truncated header ({4 + len(dims)} of {4 + 4 * ndim} bytes)")
    return DTYPES[code], struct.unpack(f">{ndim}I", dims)


def payload_size(dtype: np.dtype, shape: tuple[int, ...]) -> int:
    """Bytes of data an IDX header of this dtype and shape promises."""
    return int(np.prod(shape, dtype=np.int64)) * dtype.itemsize


def decode_idx(data: bytes, name: str = "<bytes>") -> np.ndarray:
    """Parse IDX bytes into an array, validating the header against the payload."""
    dtype, shape = read_header(io.BytesIO(data), name)
    header = 4 + 4 * len(shape)
    expected = header + payload_size(dtype, shape)
    if len(data) != expected:
        state = "truncated" if len(data) < expected else "has trailing bytes"
        raise IdxError(
            f"{name}: {state}: header says shape {shape} ({expected} bytes), file has {len(data)}"
        )
    return (
        np.frombuffer(data, dtype=dtype, offset=header)
        .reshape(shape)
        .astype(dtype.newbyteorder("="))
    )


def decompress(data: bytes, name: str = "<bytes>") -> bytes:
    """Return the bytes of an IDX file, gunzipping when they are gzip-compressed."""
    if not data.startswith(GZIP_MAGIC):
        return data
    try:
        return gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as err:
        raise IdxError(f"{name}: corrupt gzip data ({err})") from None


def open_idx(path: Path) -> IO[bytes]:
    """Open an IDX file for streaming, gunzipping on the fly when it is gzip-compressed."""
    stream = path.open("rb")
    # Peek rather than read-and-reopen, so a pipe or FIFO loses nothing to the sniffing.
    magic = stream.peek(2)[:2]
    return GzipStream(stream) if magic == GZIP_MAGIC else stream


class GzipStream(gzip.GzipFile):
    """Gunzips an open binary file and closes it when closed (GzipFile alone leaves it open)."""

    def __init__(self, raw: IO[bytes]) -> None:
        super().__init__(fileobj=raw, mode="rb")
        self.raw = raw

    def close(self) -> None:
        try:
            super().close()
        finally:
            self.raw.close()


def read_idx(path: Path | str) -> np.ndarray:
    """Read an IDX file (raw or .gz) into a native-endian array."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise IdxError(f"{path}: cannot read ({err.strerror})") from None
    return decode_idx(decompress(data, str(path)), str(path))


def encode_idx(array: np.ndarray) -> bytes:
    """Serialize an array as IDX bytes (the inverse of decode_idx)."""
    codes = {dtype.newbyteorder("="): code for code, dtype in DTYPES.items()}
    native = np.dtype(array.dtype).newbyteorder("=")
    if native not in codes:
        raise IdxError(f"dtype {array.dtype} has no IDX code")
    code = codes[native]
    header = struct.pack(">HBB", 0, code, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + np.ascontiguousarray(array, dtype=DTYPES[code]).tobytes()
