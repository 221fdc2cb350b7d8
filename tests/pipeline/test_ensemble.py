"""Ensembles: combination rules against numpy, one ONNX graph against torch, served for real."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import yaml
from click.testing import CliRunner

from digits.cli import cli
from digits.golden import golden_path
from pipeline.config import ParamError, parse_group
from pipeline.model.network import MLP, ModelParams, build_mlp, predict_logits
from pipeline.model.transform import fit_transform
from pipeline.onnx_export.ensemble_graph import (
    Ensemble,
    EnsembleParams,
    build_ensemble_onnx,
    ensemble_probabilities,
)
from pipeline.training.loop import fit
from pipeline.training.params import TrainParams
from tests.conftest import flat_digits
from tests.pipeline.conftest import write_prepared
from tests.serving.conftest import running_server

SEEDS = (0, 1, 2)


@pytest.fixture(scope="module")
def data():
    train, dev = flat_digits(300, 1), flat_digits(200, 2)
    transform, _ = fit_transform(train[0], "standardize")
    return train, dev, transform


@pytest.fixture(scope="module")
def members(data) -> list[MLP]:
    """Three BN + dropout networks differing by seed, trained briefly (they disagree on dev)."""
    train, dev, transform = data
    nets = []
    for seed in SEEDS:
        torch.manual_seed(seed)
        net = build_mlp(ModelParams(hidden=(16, 16), residual=True), transform)
        fit(net, train, dev, TrainParams(epochs=1, batch_size=64, lr=0.003), seed=seed)
        nets.append(net.eval())
    return nets


def member_probabilities(members: list[MLP], x: np.ndarray) -> np.ndarray:
    """(k, N, 10) softmax of each member, numpy."""
    logits = np.stack([predict_logits(m, x) for m in members]).astype(np.float64)
    e = np.exp(logits - logits.max(axis=2, keepdims=True))
    return e / e.sum(axis=2, keepdims=True)


def plain_session(path: Path, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """logits and probabilities from a bare ONNX Runtime session on float32 pixels."""
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return tuple(session.run(["logits", "probabilities"], {"pixels": x.astype(np.float32)}))


def test_mean_is_the_average_of_the_members_probabilities(members, data):
    x = data[1][0]
    expected = member_probabilities(members, x).mean(axis=0)
    got = ensemble_probabilities(Ensemble(members, "mean"), x)
    np.testing.assert_allclose(got, expected, atol=1e-6)


def test_vote_picks_the_majority_and_breaks_ties_by_mean_probability(members, data):
    x = data[1][0]
    probs = member_probabilities(members, x)  # (3, N, 10)
    votes = np.zeros(probs.shape[1:])
    for member in probs:
        votes[np.arange(len(x)), member.argmax(axis=1)] += 1
    mean = probs.mean(axis=0)
    leaders = votes == votes.max(axis=1, keepdims=True)  # the majority, or all tied classes
    expected = np.where(leaders, mean, -1).argmax(axis=1)
    assert (votes.max(axis=1) == 1).any(), "the fixture should hold three-way disagreements"
    got = ensemble_probabilities(Ensemble(members, "vote"), x)
    assert (got.argmax(axis=1) == expected).all()
    np.testing.assert_allclose(got.sum(axis=1), 1.0, atol=1e-6)


@pytest.mark.parametrize("combine", ["mean", "vote"])
def test_the_ensemble_is_one_onnx_graph_with_the_digits_contract_and_torch_parity(
    members, data, tmp_path, combine
):
    path = tmp_path / "ensemble.onnx"
    proto = build_ensemble_onnx(members, combine)
    onnx.checker.check_model(proto, full_check=True)
    onnx.save(proto, path)
    assert [i.name for i in proto.graph.input] == ["pixels"]
    assert [o.name for o in proto.graph.output] == ["logits", "probabilities"]
    ops = {node.op_type for node in proto.graph.node}
    assert not ops & {"BatchNormalization", "Dropout"}, ops
    x = data[1][0]
    logits, probs = plain_session(path, x)
    reference = ensemble_probabilities(Ensemble(members, combine), x)  # unfolded torch members
    assert np.abs(probs - reference).max() <= 1e-5
    np.testing.assert_allclose(torch.softmax(torch.from_numpy(logits), 1).numpy(), probs, atol=1e-6)
    assert plain_session(path, x[:1])[1].shape == (1, 10)  # the batch axis stays dynamic


@pytest.mark.slow
def test_ensemble_command_writes_a_verified_model_and_reports_each_member(
    data, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    train, dev, transform = data
    write_prepared(tmp_path / "data/prepared", data)
    np.savez(tmp_path / "data/prepared/test.npz", x=dev[0], y=dev[1])
    params = {
        "base": {"seed": 7},
        "model": {"hidden": [16]},
        "train": {"epochs": 2, "batch_size": 64},
        "ensemble": {"members": 3, "combine": "vote"},
    }
    Path("params.yaml").write_text(yaml.safe_dump(params))
    result = CliRunner().invoke(cli, ["ensemble"])
    assert result.exit_code == 0, result.output
    report = json.loads(Path("reports/ensemble.json").read_text())
    assert [row["seed"] for row in report["members"]] == [7, 8, 9]
    tests = [row["test_accuracy"] for row in report["members"]]
    assert report["members_test_mean"] == pytest.approx(np.mean(tests))
    assert report["test_gain"] == pytest.approx(report["test_accuracy"] - np.mean(tests))
    assert report["onnx"]["max_abs_prob_diff"] <= 1e-5
    model = Path("models/digits-ensemble.onnx")
    assert golden_path(model).exists()
    probs = plain_session(model, dev[0])[1]
    assert (probs.argmax(1) == dev[1]).mean() == pytest.approx(report["test_accuracy"])
    verified = CliRunner().invoke(cli, ["verify", str(model)])
    assert verified.exit_code == 0, verified.output


def test_ensemble_command_with_one_member_is_a_one_line_error(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("params.yaml").write_text(yaml.safe_dump({"ensemble": {"members": 1}}))
    (tmp_path / "data/prepared").mkdir(parents=True)
    result = CliRunner().invoke(cli, ["ensemble"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert result.output.strip().splitlines() == ["Error: params: ensemble.members must be >= 2"]


def test_bad_combine_is_rejected_naming_the_key():
    with pytest.raises(ParamError, match="ensemble.combine"):
        parse_group(EnsembleParams, "ensemble", {"combine": "median"})


@pytest.mark.e2e
def test_the_started_service_serves_the_ensemble_onnx(members, data, tmp_path):
    from digits.golden import Golden, write_golden
    from pipeline.onnx_export.graph import model_metadata

    path = tmp_path / "digits-ensemble.onnx"
    proto = build_ensemble_onnx(members, "mean")
    props = model_metadata(proto, {"ensemble": "3 members by seed, mean"})
    onnx.helper.set_model_props(proto, props)
    onnx.save(proto, path)
    x = data[1][0][:20]
    logits, probs = plain_session(path, x)
    write_golden(
        golden_path(path), Golden(x.astype(np.float32), logits, probs, props["model_version"])
    )
    reference = ensemble_probabilities(Ensemble(members, "mean"), x)
    with running_server(path, tmp_path / "server.log") as url:
        info = httpx.get(f"{url}/info", timeout=10).json()
        answer = httpx.post(f"{url}/predict", json={"pixels": x.tolist()}, timeout=30).json()
    assert props["model_version"] in json.dumps(info) and "verified" in json.dumps(info)
    assert np.abs(np.array(answer["probabilities"]) - reference).max() <= 1e-5
    assert answer["digits"] == reference.argmax(axis=1).tolist()
