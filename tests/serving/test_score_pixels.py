"""digits score refuses NaN, infinite and out-of-range pixels like /predict, naming file and row."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from digits.cli import cli
from tests.conftest import assert_one_line_error


def run(*args: object):
    """`digits score … --provider cpu --batch-size 8`, in process: row 17 is in chunk three."""
    argv = ["score", *map(str, args), "--provider", "cpu", "--batch-size", "8"]
    return CliRunner().invoke(cli, argv)


def spoiled(dtype: type, value: float, row: int = 17, n: int = 40) -> np.ndarray:
    """n all-black images with one bad pixel value in `row`."""
    x = np.zeros((n, 784), dtype)
    x[row, 300] = value
    return x


def write(path: Path, x: np.ndarray) -> Path:
    """Save pixels as .npy, .npz (array x) or CSV, by the path's suffix."""
    if path.suffix == ".npy":
        np.save(path, x)
    elif path.suffix == ".npz":
        np.savez(path, x=x)
    else:
        np.savetxt(path, x, delimiter=",", fmt="%g")
    return path


CASES = {
    "npy NaN": ("x.npy", np.float32, np.nan, "nan"),
    "npy inf": ("x.npy", np.float64, np.inf, "inf"),
    "npy negative int": ("x.npy", np.int64, -1, "-1"),
    "npz above 255": ("x.npz", np.float32, 255.5, "255.5"),
    "csv -inf": ("x.csv", np.float32, -np.inf, "-inf"),
    "csv 300": ("x.csv", np.float32, 300, "300"),
}


@pytest.mark.parametrize(("name", "dtype", "value", "shown"), CASES.values(), ids=list(CASES))
def test_bad_pixels_stop_with_one_line_naming_file_and_row(
    linear_onnx: Path, tmp_path: Path, name: str, dtype: type, value: float, shown: str
) -> None:
    source = write(tmp_path / name, spoiled(dtype, value))
    out = tmp_path / "out.csv"
    result = run(linear_onnx, source, "-o", out)
    assert_one_line_error(result, f"{source}: row 17 has pixel value {shown}", "0–255")
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([linear_onnx.name, name])


def test_first_csv_row_over_255_is_bad_data_not_a_header(linear_onnx: Path, tmp_path: Path):
    source = write(tmp_path / "x.csv", spoiled(np.float32, 999, row=0))
    result = run(linear_onnx, source, "-o", tmp_path / "out.csv")
    assert_one_line_error(result, f"{source}: row 0 has pixel value 999")


def test_numbered_csv_header_is_still_skipped(linear_onnx: Path, tmp_path: Path) -> None:
    source = tmp_path / "x.csv"
    header = ",".join(str(i) for i in range(784))
    np.savetxt(source, np.zeros((3, 784)), delimiter=",", fmt="%d", header=header, comments="")
    out = tmp_path / "out.csv"
    result = run(linear_onnx, source, "-o", out, "-q")
    assert result.exit_code == 0, result.output
    assert len(out.read_text().splitlines()) == 1 + 3


def test_skip_bad_lists_the_bad_pixel_file_and_scores_the_rest(
    linear_onnx: Path, tmp_path: Path
) -> None:
    bad = write(tmp_path / "bad.npy", spoiled(np.float32, np.nan))
    good = write(tmp_path / "good.npy", np.full((5, 784), 128, np.float32))
    out = tmp_path / "out.csv"
    result = run(linear_onnx, bad, good, "-o", out, "--skip-bad", "-q")
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    assert f"{bad}: row 17 has pixel value nan" in result.output
    rows = out.read_text().splitlines()[1:]
    assert len(rows) == 5 and all(row.startswith(f"{good}:") for row in rows)
