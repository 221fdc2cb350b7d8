"""Atomic writes: a temp file or directory beside the target, swapped in only when complete.

An interrupted or failed stage therefore never leaves a half-written artifact behind. A
directory is replaced only when everything in it is something its writer owns: pointed at a
directory holding anything else, a stage refuses instead of deleting what it did not create.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fnmatch
import functools
import json
import os
import secrets
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO, Any

import numpy as np

from digits.errors import NotOwnedError

AT_FDCWD = -100  # <fcntl.h>: paths relative to the working directory
RENAME_EXCHANGE = 2  # <linux/fs.h>: swap the two paths in one step
CHOOSE = "choose an empty or new directory"


def umask_mode(mode: int) -> int:
    """`mode` less the process umask: what a plain open() or mkdir() would have given."""
    mask = os.umask(0)
    os.umask(mask)
    return mode & ~mask


@contextlib.contextmanager
def atomic_path(target: Path | str, suffix: str = "") -> Iterator[Path]:
    """Yield a temp path in the target's directory; rename it onto `target` on success."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=suffix + ".tmp", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, umask_mode(0o666))  # mkstemp makes files private
        os.replace(tmp_path, target)
    finally:
        tmp_path.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_open(target: Path | str, buffering: int = -1) -> Iterator[IO[bytes]]:
    """An open binary temp file beside `target`, renamed onto it only if the block completes."""
    # The file is closed (flushed) before atomic_path renames it: `with` exits right to left.
    with atomic_path(target) as tmp, tmp.open("wb", buffering=buffering) as out:
        yield out


def is_owned(name: str, owns: Iterable[str]) -> bool:
    """Whether a directory entry matches one of the owned names or fnmatch patterns."""
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in owns)


def refuse_foreign(target: Path | str, owns: Iterable[str], writer: str = "this command") -> None:
    """Raise NotOwnedError unless `target` is missing or a directory of owned entries only."""
    target = Path(target)
    owns = (owns,) if isinstance(owns, str) else tuple(owns)
    if target.is_symlink():
        raise NotOwnedError(f"{target}: is a symlink, which {writer} did not write; {CHOOSE}")
    if not target.exists():
        return
    if not target.is_dir():
        raise NotOwnedError(f"{target}: is a file, not a directory {writer} wrote; {CHOOSE}")
    foreign = sorted(name for name in os.listdir(target) if not is_owned(name, owns))
    if foreign:
        more = f" and {len(foreign) - 3} more" if len(foreign) > 3 else ""
        shown = ", ".join(foreign[:3]) + more
        raise NotOwnedError(f"{target}: holds files {writer} did not write ({shown}); {CHOOSE}")


@functools.cache
def libc_renameat2() -> Callable[..., int] | None:
    """glibc's renameat2 (2.28+), or None off Linux or on an older C library."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        function = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return None
    fd, path = ctypes.c_int, ctypes.c_char_p
    function.argtypes = [fd, path, fd, path, ctypes.c_uint]
    function.restype = ctypes.c_int
    return function


def exchange(a: Path | str, b: Path | str) -> bool:
    """Swap two existing paths in one atomic step; False where the system cannot."""
    renameat2 = libc_renameat2()
    if renameat2 is None:
        return False
    if renameat2(AT_FDCWD, os.fsencode(a), AT_FDCWD, os.fsencode(b), RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    # Kernels before 3.15 answer ENOSYS; file systems without the exchange, EINVAL.
    if code in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), os.fspath(a), None, os.fspath(b))


def swap_in(new: Path, target: Path) -> None:
    """Replace `target` with directory `new` and remove the old one; atomic where Linux allows."""
    if not os.path.lexists(target):
        os.rename(new, target)  # nothing to keep: a plain rename is atomic
        return
    if exchange(new, target):
        shutil.rmtree(new, ignore_errors=True)  # `new` now names the old output
        return
    # Fallback without renameat2: between the two renames `target` is missing while the old
    # output sits whole at `backup`; a kill in that moment leaves it there to be moved back.
    backup = target.with_name(f".{target.name}.{secrets.token_hex(4)}.old")
    os.rename(target, backup)
    try:
        os.rename(new, target)
    except BaseException:
        os.rename(backup, target)
        raise
    shutil.rmtree(backup, ignore_errors=True)


@contextlib.contextmanager
def atomic_dir(
    target: Path | str, owns: Iterable[str], writer: str = "this command"
) -> Iterator[Path]:
    """Yield a temp directory beside `target`; swap it in for `target` on success."""
    target = Path(target)
    owns = (owns,) if isinstance(owns, str) else tuple(owns)
    refuse_foreign(target, owns, writer)  # before the caller spends any work on the block
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        yield tmp
        os.chmod(tmp, umask_mode(0o777))  # mkdtemp makes directories private
        refuse_foreign(target, owns, writer)  # someone may have written there meanwhile
        swap_in(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # the new files, when the block or swap failed


def write_bytes(target: Path | str, data: bytes) -> None:
    """Write bytes atomically."""
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)


def write_json(target: Path | str, obj: Any) -> None:
    """Write pretty JSON atomically."""
    with atomic_path(target) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n")


def write_npz(target: Path | str, **arrays: np.ndarray) -> None:
    """Write an uncompressed .npz atomically."""
    with atomic_path(target) as tmp, tmp.open("wb") as f:
        np.savez(f, **arrays)
