"""digits.npz: prepared splits read whole, and every kind of broken file named in a DataError."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest

from digits.errors import DataError
from digits.npz import read_npz, read_split


def test_read_split_returns_the_arrays(tmp_path: Path) -> None:
    x, y = np.arange(2 * 784).reshape(2, 784).astype(np.uint8), np.array([3, 4])
    np.savez(tmp_path / "s.npz", x=x, y=y)
    got_x, got_y = read_split(tmp_path / "s.npz")
    np.testing.assert_array_equal(got_x, x)
    np.testing.assert_array_equal(got_y, y)


def bare_npy(path: Path) -> None:
    """A .npy array under an .npz name."""
    buffer = io.BytesIO()
    np.save(buffer, np.zeros(3))
    path.write_bytes(buffer.getvalue())


def corrupt_member(path: Path) -> None:
    """A compressed archive whose directory is intact but whose x.npy data is damaged."""
    rng = np.random.default_rng(0)
    np.savez_compressed(path, x=rng.integers(0, 255, (50, 784), np.uint8), y=np.zeros(50))
    data = bytearray(path.read_bytes())
    data[200:400] = bytes(b ^ 0xFF for b in data[200:400])
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    ("make", "words"),
    [
        (lambda p: None, "no such file"),
        (lambda p: p.write_bytes(b""), "not an .npz archive"),
        (bare_npy, "a single .npy array"),
        (corrupt_member, "corrupt or truncated .npz"),
        (lambda p: np.savez(p, x=np.zeros((2, 784))), "no array y (holds x)"),
        (lambda p: np.savez(p, x=np.zeros((2, 784)), y=np.zeros(3)), "x must be N×784"),
    ],
)
def test_read_split_names_the_file_and_the_fault(tmp_path: Path, make, words: str) -> None:
    path = tmp_path / "train.npz"
    make(path)
    with pytest.raises(DataError) as caught:
        read_split(path)
    assert str(caught.value).startswith(f"{path}: {words}")
    assert "\n" not in str(caught.value)


def test_read_npz_reads_any_named_arrays(tmp_path: Path) -> None:
    np.savez(tmp_path / "t.npz", mean=np.zeros(3), matrix=np.eye(3))
    mean, matrix = read_npz(tmp_path / "t.npz", "mean", "matrix")
    assert mean.shape == (3,) and matrix.shape == (3, 3)
