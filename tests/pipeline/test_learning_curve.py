"""The learning curve: nested subsets, equal updates per point, and the stage on tiny data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from click.testing import CliRunner

from digits.cli import cli
from pipeline.config import ParamError, parse_group
from pipeline.model.transform import AffineTransform
from pipeline.stages.learning_curve import LearningCurveParams, nested_subsets
from tests.conftest import make_digits

TINY = {
    "base": {"seed": 0},
    "model": {"hidden": [32], "dropout": 0.0},
    "train": {"batch_size": 32, "schedule": "constant", "lr": 0.003},
    "learning_curve": {"fractions": [0.04, 0.2, 1.0], "epochs": 1.0, "max_epochs": 10},
}


def test_subsets_are_nested_sorted_and_sized_by_fraction():
    subsets = nested_subsets(1000, (0.05, 0.3, 1.0), seed=3)
    assert [len(s) for s in subsets] == [50, 300, 1000]
    assert set(subsets[0]) <= set(subsets[1]) <= set(subsets[2])
    assert all(np.all(np.diff(s) > 0) for s in subsets)
    assert not np.array_equal(nested_subsets(1000, (0.05, 1.0), seed=4)[0], subsets[0])


def test_every_point_gets_the_same_updates_up_to_the_cap():
    params = LearningCurveParams(fractions=(0.05, 0.25, 1.0), epochs=2.0, max_epochs=20)
    assert [params.epochs_for(f) for f in params.fractions] == [20, 8, 2]
    assert LearningCurveParams(epochs=2.0, max_epochs=30).epochs_for(0.05) == 30


@pytest.mark.parametrize(
    "raw",
    [{"fractions": [0.5, 0.2]}, {"fractions": [0.0, 1.0]}, {"fractions": [1.0]}, {"epochs": 0}],
)
def test_bad_params_name_the_key(raw):
    with pytest.raises(ParamError, match="learning_curve."):
        parse_group(LearningCurveParams, "learning_curve", raw)


@pytest.fixture
def prepared(tmp_path: Path) -> Path:
    """Tiny train (250) and dev (100) splits with a /255 transform."""
    directory = tmp_path / "prepared"
    directory.mkdir()
    for name, n, seed in (("train", 250, 1), ("dev", 100, 2)):
        x, y = make_digits(n, seed)
        np.savez(directory / f"{name}.npz", x=x.reshape(n, -1), y=y.astype(np.int64))
    identity = AffineTransform(np.zeros(784, np.float32), np.eye(784, dtype=np.float32) / 255)
    identity.save(directory / "transform.npz")
    return directory


def run_curve(prepared: Path, out: Path) -> list[dict]:
    """`digits learning-curve` with TINY params; the rows it wrote."""
    params = prepared.parent / "params.yaml"
    params.write_text(yaml.safe_dump(TINY))
    args = ["learning-curve", "--params", params, "--data", prepared, "--out", out]
    result = CliRunner().invoke(cli, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return json.loads(out.read_text())


def test_stage_writes_one_row_per_fraction_and_more_data_lowers_dev_error(prepared, tmp_path):
    rows = run_curve(prepared, tmp_path / "curve.json")
    assert [r["train_size"] for r in rows] == [10, 50, 250]
    assert [r["epochs"] for r in rows] == [10, 5, 1]
    assert rows[0]["train_error"] < rows[0]["dev_error"]  # 10 images: memorised, not learned
    assert rows[-1]["dev_error"] < rows[0]["dev_error"]
    assert run_curve(prepared, tmp_path / "again.json") == rows  # seeded: repeatable
