import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from click.testing import CliRunner

from digits.cli import cli
from pipeline.tools.lr_find import lr_sweep, suggest_lr
from pipeline.training.params import TrainParams
from tests.pipeline.conftest import tiny_model, write_prepared

pytestmark = pytest.mark.usefixtures("one_thread")


def test_sweep_grows_geometrically_stops_on_divergence_and_suggests_below_it(data):
    train, _, transform = data
    params = TrainParams(optimizer="sgd", batch_size=4, weight_decay=0.0)
    lrs, losses = lr_sweep(tiny_model(transform), train, params, 1e-4, 1e4, steps=70)
    ratios = lrs[1:] / lrs[:-1]
    assert lrs[0] == pytest.approx(1e-4)
    np.testing.assert_allclose(ratios, (1e8) ** (1 / 69), rtol=1e-9)
    assert len(lrs) < 70, "an lr of 1e4 with plain SGD must diverge before the end"
    suggestion = suggest_lr(lrs, losses)
    best = int(np.argmin(losses))
    assert suggestion == pytest.approx(lrs[best] / 10)
    assert losses[best] < 0.8 * losses[0]


def test_lr_find_command_writes_curve_json_and_png(data, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_prepared(tmp_path / "data/prepared", data)
    params = {"model": {"hidden": [16]}, "train": {"batch_size": 8}}
    Path("params.yaml").write_text(yaml.safe_dump(params))
    result = CliRunner().invoke(cli, ["lr-find", "--steps", "30"])
    assert result.exit_code == 0, result.output
    report = json.loads(Path("reports/lr_find.json").read_text())
    assert len(report["lr"]) == len(report["loss"]) > 1
    assert report["suggested_lr"] == pytest.approx(
        suggest_lr(np.array(report["lr"]), np.array(report["loss"]))
    )
    assert Path("reports/lr_find.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    result = CliRunner().invoke(cli, ["lr-find", "--min-lr", "1", "--max-lr", "0.1"])
    assert result.exit_code == 2 and "--min-lr" in result.output
