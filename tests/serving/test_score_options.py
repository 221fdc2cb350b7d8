"""ScoreOptions: built once by `digits score` from its flags, read as is by both engines."""

from __future__ import annotations

import dataclasses
import inspect
from pathlib import Path

import numpy as np
import pytest

from serving.scoring import command
from serving.scoring.local import score_locally
from serving.scoring.options import ScoreOptions
from serving.scoring.summary import Totals
from serving.session import load_model
from tests.serving.conftest import run

OPTIONS = {
    "fmt": "csv",
    "batch_size": 16,
    "provider": "cpu",
    "probabilities": False,
    "labels": None,
    "skip_bad": False,
    "quiet": True,
    "ray_address": None,
    "actors": None,
}


def test_every_flag_of_the_command_is_a_field_and_every_field_but_fmt_a_flag() -> None:
    flags = {p.name for p in command.score.params} - {"model", "inputs", "output", "engine"}
    assert flags == {f.name for f in dataclasses.fields(ScoreOptions)} - {"fmt"}


def test_options_are_frozen_and_refuse_unknown_missing_or_bad_values() -> None:
    options = ScoreOptions(**OPTIONS)
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.skip_bad = True  # type: ignore[misc]
    with pytest.raises(TypeError, match="skipped"):
        ScoreOptions(**OPTIONS, skipped=[])  # the old options dict's accumulator
    with pytest.raises(TypeError, match="quiet"):
        ScoreOptions(**{k: v for k, v in OPTIONS.items() if k != "quiet"})
    for key, bad in (("fmt", "xml"), ("batch_size", 0), ("provider", "tpu"), ("actors", 0)):
        with pytest.raises(ValueError, match=f"ScoreOptions.{key} "):
            ScoreOptions(**{**OPTIONS, key: bad})


def test_the_local_engine_scores_with_the_options_and_returns_totals(
    linear_onnx: Path, idx_pair, tmp_path: Path
) -> None:
    images, _, y = idx_pair
    options = ScoreOptions(**{**OPTIONS, "fmt": "jsonl", "skip_bad": True})
    model = load_model(linear_onnx, provider="cpu")
    out = tmp_path / "s.jsonl"
    totals = score_locally(model, [str(images), str(tmp_path / "gone")], out, options)
    assert totals.rows == len(y) == len(out.read_text().splitlines())
    assert totals.matrix.sum(axis=1).tolist() == np.bincount(y, minlength=10).tolist()
    assert totals.skipped == [f"{tmp_path / 'gone'}: no such file or directory"]


def test_the_command_hands_the_flags_to_the_local_engine(
    linear_onnx: Path, idx_pair, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen = []
    monkeypatch.setattr(command, "score_locally", lambda *a: seen.append(a[-1]) or Totals())
    result = run(linear_onnx, idx_pair[0], "-o", tmp_path / "s.parquet", "--batch-size", "16",
                 "--probabilities", "--skip-bad", "-q")  # fmt: skip
    assert result.exit_code == 0, result.output
    wanted = {**OPTIONS, "fmt": "parquet", "probabilities": True, "skip_bad": True}
    assert seen == [ScoreOptions(**wanted)]


def test_the_command_hands_the_same_options_to_the_ray_engine(
    linear_onnx: Path, idx_pair, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("ray")
    from serving.scoring import ray_engine

    calls = []
    bind = inspect.signature(ray_engine.score_dataset).bind  # the real engine's parameters
    monkeypatch.setattr(ray_engine, "score_dataset", lambda *a: calls.append(bind(*a)) or Totals())
    out = tmp_path / "parts.csv"
    result = run(linear_onnx, idx_pair[0], "-o", out, "--engine", "ray", "--batch-size", "16",
                 "--ray-address", "127.0.0.1:1", "--actors", "3", "-q")  # fmt: skip
    assert result.exit_code == 0, result.output
    (call,) = calls
    wanted = {**OPTIONS, "ray_address": "127.0.0.1:1", "actors": 3}
    assert call.arguments["options"] == ScoreOptions(**wanted)
    assert call.arguments["output"] == str(out)
    assert call.arguments["threshold"] == load_model(linear_onnx, provider="cpu").threshold
