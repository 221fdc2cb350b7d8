"""Read .npz archives of named arrays, and the prepared splits' contract, with clear errors.

Reads the files it is given; writes nothing. Every failure (not a zip, truncated, a missing key,
a split of the wrong shape) is a DataError naming the file, so each command that reads
data/prepared fails in one line.
"""

from __future__ import annotations

import zipfile
import zlib
from pathlib import Path
from typing import IO

import numpy as np

from digits.contract import PIXELS
from digits.errors import DataError, reason

# What np.load raises on a file that is not an .npz, or one whose members are cut short.
NPZ_ERRORS = (ValueError, EOFError, zipfile.BadZipFile, zlib.error, OSError)


def read_npz(path: Path | str, *keys: str) -> tuple[np.ndarray, ...]:
    """The named arrays of an .npz file, fully read; DataError when it is not one or lacks a key."""
    try:
        # Our own file object: np.load leaks its own when the zip turns out to be broken.
        with open(path, "rb") as f:
            return read_archive(f, str(path), keys)
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None


def read_archive(f: IO[bytes], path: str, keys: tuple[str, ...]) -> tuple[np.ndarray, ...]:
    """The named arrays of an open .npz file (see read_npz)."""
    try:
        data = np.load(f, allow_pickle=False)
    except zipfile.BadZipFile:
        raise DataError(f"{path}: not an .npz archive, or truncated") from None
    except NPZ_ERRORS:  # np.load took it for a pickle: some other kind of file
        raise DataError(f"{path}: not an .npz archive") from None
    if not isinstance(data, np.lib.npyio.NpzFile):  # np.load reads a bare .npy as well
        raise DataError(f"{path}: a single .npy array, not an .npz archive")
    with data:
        missing = [key for key in keys if key not in data.files]
        if missing:
            found = ", ".join(data.files) or "nothing"
            raise DataError(f"{path}: no array {', '.join(missing)} (holds {found})")
        try:
            return tuple(data[key] for key in keys)
        except NPZ_ERRORS as err:
            raise DataError(f"{path}: corrupt or truncated .npz ({reason(err)})") from None


def read_split(path: Path | str) -> tuple[np.ndarray, np.ndarray]:
    """A prepared split (x: N×PIXELS raw pixels, y: N labels), checked against the contract."""
    x, y = read_npz(path, "x", "y")
    if x.ndim != 2 or x.shape[1] != PIXELS or y.shape != (len(x),):
        raise DataError(f"{path}: x must be N×{PIXELS} and y N labels, got {x.shape} and {y.shape}")
    return x, y
