"""digits score and Parquet: the CSV's columns, Parquet inputs, skipped inputs undone, errors."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import serving
from digits.cli import cli
from serving import score as score_module
from tests.conftest import assert_one_line_error
from tests.serving.conftest import oracle, read_csv_rows, run

try:
    import pyarrow as pa
    import pyarrow.parquet as pq
except ImportError:  # the serving-only install: only the tests of the error messages run
    pa = pq = None
needs_pyarrow = pytest.mark.skipif(pa is None, reason="needs pyarrow: digits[parquet]")


def write_parquet(path: Path, x: np.ndarray, y: np.ndarray | None = None) -> Path:
    """Images as a Parquet file: `pixels` a fixed-size list of 784 per row, maybe `label`."""
    columns = {"pixels": pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), 784)}
    if y is not None:
        columns["label"] = pa.array(y)
    pq.write_table(pa.table(columns), path)
    return path


@needs_pyarrow
def test_parquet_output_has_the_csv_columns_and_exact_probabilities(
    linear_onnx: Path, idx_pair, tmp_path: Path
) -> None:
    path, x, _ = idx_pair
    for name in ("s.csv", "s.parquet"):
        result = run(linear_onnx, path, "-o", tmp_path / name, "--probabilities", "-q")
        assert result.exit_code == 0, result.output
    table = pq.read_table(tmp_path / "s.parquet")
    rows = read_csv_rows(tmp_path / "s.csv")
    assert table.column_names == list(rows[0])
    assert table.column("source").to_pylist() == [r["source"] for r in rows]
    assert table.column("digit").to_pylist() == [int(r["digit"]) for r in rows]
    p = np.stack([table.column(f"p{k}").to_numpy() for k in range(10)], axis=1)
    np.testing.assert_allclose(p, oracle(linear_onnx, x), rtol=1e-5, atol=1e-6)  # float32
    np.testing.assert_allclose(table.column("confidence").to_numpy(), p.max(axis=1))


@needs_pyarrow
def test_parquet_input_scores_like_idx_with_its_labels(
    linear_onnx: Path, idx_pair, tmp_path: Path
) -> None:
    _, x, y = idx_pair
    source = write_parquet(tmp_path / "in.parquet", x, y)
    result = run(linear_onnx, source, "-o", tmp_path / "p.csv", "--batch-size", "16")
    assert result.exit_code == 0, result.output
    assert "/50 labelled images)" in result.output
    rows = read_csv_rows(tmp_path / "p.csv")
    assert [r["source"] for r in rows] == [f"{source}:{i}" for i in range(50)]
    assert [int(r["digit"]) for r in rows] == oracle(linear_onnx, x).argmax(axis=1).tolist()


@needs_pyarrow
def test_skipped_input_leaves_no_rows_even_after_row_groups_were_written(
    linear_onnx: Path, idx_pair, tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.setattr(score_module, "ROW_GROUP", 8)  # the bad file's rows reach the file first
    path, x, _ = idx_pair
    bad = write_parquet(tmp_path / "bad.parquet", x[:40])
    data = bytearray(bad.read_bytes())
    data[100:20000] = bytes(19900)  # damage the pages, keep the footer: fails mid-read
    bad.write_bytes(bytes(data))
    out = tmp_path / "s.parquet"
    result = run(linear_onnx, path, bad, path, "-o", out, "--skip-bad", "--batch-size", "8")
    assert result.exit_code == 0, result.output
    assert "skipped 1 bad input(s)" in result.stderr and "bad.parquet" in result.stderr
    table = pq.read_table(out)
    assert table.column("source").to_pylist() == [f"{path}:{i}" for i in range(50)] * 2
    assert pq.ParquetFile(out).metadata.num_row_groups > 1


@needs_pyarrow
def test_bad_parquet_inputs_are_one_line(linear_onnx: Path, tmp_path: Path) -> None:
    junk = tmp_path / "junk.parquet"
    junk.write_bytes(b"not parquet")
    wrong = tmp_path / "wrong.parquet"
    pq.write_table(pa.table({"x": [1, 2]}), wrong)
    short = tmp_path / "short.parquet"
    pq.write_table(pa.table({"pixels": pa.array([[0] * 783], pa.list_(pa.uint8()))}), short)
    for path, words in ((junk, "not a Parquet file"), (wrong, "no column 'pixels'"),
                        (short, "no 784 pixels")):  # fmt: skip
        result = run(linear_onnx, path, "-o", tmp_path / "o.parquet")
        assert_one_line_error(result, path.name, words)
        assert not (tmp_path / "o.parquet").exists()


def test_parquet_without_pyarrow_names_the_extra(
    linear_onnx: Path, idx_pair, tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # import pyarrow now fails
    result = run(linear_onnx, idx_pair[0], "-o", tmp_path / "o.parquet")
    assert_one_line_error(result, "pip install 'digits[parquet]'")


def test_ray_engine_options_fail_in_one_line(
    linear_onnx: Path, idx_pair, tmp_path: Path, monkeypatch
) -> None:
    runner = CliRunner()
    args = ["score", str(linear_onnx), str(idx_pair[0]), "-o", str(tmp_path / "o.csv")]
    labels = runner.invoke(cli, [*args, "--engine", "ray", "--labels", str(idx_pair[0])])
    assert_one_line_error(labels, "--labels", "--engine local", code=2)
    monkeypatch.setitem(sys.modules, "ray", None)
    monkeypatch.delitem(sys.modules, "serving.ray_score", raising=False)
    monkeypatch.delattr(serving, "ray_score", raising=False)  # imported by an earlier test
    missing = runner.invoke(cli, [*args, "--engine", "ray"])
    assert_one_line_error(missing, "pip install 'digits[ray]'")
    (tmp_path / "d.csv").mkdir()
    directory = runner.invoke(cli, [*args[:3], "-o", str(tmp_path / "d.csv")])
    assert directory.exit_code == 2 and "--engine ray" in directory.stderr
