"""The IDX file format of MNIST: read (raw or gzip) with full validation, and write.

Layout: two zero bytes, a dtype code, the number of dimensions, then one big-endian
uint32 per dimension, then the data in row-major order (big-endian for multi-byte types).
"""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path

import numpy as np

DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
GZIP_MAGIC = b"\x1f\x8b"


class IdxError(ValueError):
    """An IDX file is corrupt, truncated or not IDX at all."""


def decode_idx(data: bytes, name: str = "<bytes>") -> np.ndarray:
    """Parse IDX bytes into an array, validating the header against the payload."""
    if len(data) < 4:
        raise IdxError(f"{name}: too short to be an IDX file ({len(data)} bytes)")
    zero, code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0:
        raise IdxError(f"{name}: bad magic number 0x{data[:4].hex()} (expected 0x0000 then dtype)")
    if code not in DTYPES:
        raise IdxError(f"{name}: unknown IDX dtype code 0x{code:02x}")
    if ndim == 0:
        raise IdxError(f"{name}: IDX header declares zero dimensions")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise IdxError(f"{name}: truncated header ({len(data)} of {header} bytes)")
    shape = struct.unpack(f">{ndim}I", data[4:header])
    dtype = DTYPES[code]
    expected = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
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
