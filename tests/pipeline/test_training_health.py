"""Per-epoch diagnostics and their verdict: classic failures are named, remedies clear them."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pipeline.analysis.training_health import (
    DiagnosticsParams,
    make_probe,
    measure,
    scalar_figures,
    verdict,
    weights_snapshot,
)
from pipeline.config import ParamError, parse_group
from pipeline.model.network import ModelParams, build_mlp
from pipeline.model.transform import AffineTransform
from pipeline.training.loop import fit
from pipeline.training.params import TrainParams
from tests.conftest import flat_digits

PARAMS = DiagnosticsParams(batch=100)


@pytest.fixture(scope="module")
def data():
    train, dev = flat_digits(300, 1), flat_digits(100, 2)
    # Standardized pixels projected to 32 features: small nets, classes well apart.
    matrix = np.random.default_rng(0).normal(0, 1 / (80 * 28), size=(784, 32)).astype(np.float32)
    transform = AffineTransform(mean=train[0].mean(axis=0).astype(np.float32), matrix=matrix)
    return train, dev, transform


pytestmark = pytest.mark.usefixtures("one_thread")


def run(data, model: dict, train: dict) -> tuple[dict, list[dict]]:
    """Train a fresh network for a few epochs with diagnostics; the verdict and the history."""
    train_split, dev, transform = data
    torch.manual_seed(0)
    net = build_mlp(ModelParams(**{"dropout": 0.0, **model}), transform)
    params = TrainParams(**{"epochs": 3, "batch_size": 32, "schedule": "constant", **train})
    history = fit(net, train_split, dev, params, probe=make_probe(dev, PARAMS))
    return verdict(history, PARAMS), history


SIGMOID_10 = {"hidden": (32,) * 10, "activation": "sigmoid", "batchnorm": False}
# Default init (uniform ±1/sqrt(fan_in)) is the small one: the gradient shrinks ~7x per layer.
VANISHING = {**SIGMOID_10, "init": "default"}
EXPLODING = {"hidden": (64, 64, 64), "batchnorm": False, "init_gain": 4.0}
DEAD = {"hidden": (32, 32), "batchnorm": False, "init_bias": -20.0}


def test_a_deep_sigmoid_net_with_a_small_init_has_vanishing_gradients(data):
    result, _ = run(data, VANISHING, {"optimizer": "sgd", "lr": 0.1})
    finding = result["findings"]["vanishing gradients"]
    assert finding["ratio"] < 1e-3 and finding["first_grad_norm"] < finding["last_grad_norm"]
    assert any("residual" in remedy for remedy in finding["remedy"])
    assert "vanishing gradients" in result["verdict"]


def test_batchnorm_relu_he_init_and_skips_remove_the_vanishing_verdict(data):
    remedy = {"hidden": (32,) * 10, "init": "he_normal", "residual": True}
    result, _ = run(data, remedy, {"optimizer": "sgd", "lr": 0.1})
    assert result["verdict"] == "healthy", result


def test_a_large_init_and_a_high_lr_without_clipping_explode(data):
    result, _ = run(data, EXPLODING, {"optimizer": "sgd", "lr": 1.0})
    finding = result["findings"]["exploding gradients"]
    assert not math.isfinite(finding["grad_norm"]) or finding["grad_norm"] > 1e3
    assert any("clip" in remedy for remedy in finding["remedy"])


def test_a_normal_init_a_lower_lr_and_clipping_remove_the_exploding_verdict(data):
    remedy = {**EXPLODING, "init_gain": 1.0}
    result, _ = run(data, remedy, {"optimizer": "sgd", "lr": 0.05, "clip_norm": 1.0})
    assert result["verdict"] == "healthy", result


def test_relu_layers_with_a_large_negative_bias_are_dead(data):
    result, history = run(data, DEAD, {"optimizer": "adam", "lr": 1e-3})
    finding = result["findings"]["dead units"]
    assert finding["share"] == 1.0 and set(finding["per_layer"]) == {"blocks.0", "blocks.1"}
    assert "dead units" in result["verdict"]
    # A dead layer passes no gradient back: the first layer's is exactly zero.
    assert history[-1]["diagnostics"]["layers"]["blocks.0"]["grad_norm"] == 0.0


def test_zero_biases_remove_the_dead_units_verdict(data):
    result, _ = run(data, {**DEAD, "init_bias": 0.0}, {"optimizer": "adam", "lr": 1e-3})
    assert result["verdict"] == "healthy", result


def test_saturated_tanh_units_are_named(data):
    saturated = {"hidden": (32,), "activation": "tanh", "batchnorm": False, "init_gain": 30.0}
    result, _ = run(data, saturated, {"optimizer": "sgd", "lr": 1e-3})
    assert result["findings"]["saturation"]["share"] > 0.5


def test_measuring_changes_neither_the_training_nor_the_weights(data):
    train_split, dev, transform = data
    params = TrainParams(epochs=2, batch_size=32, schedule="constant", optimizer="adam")
    weights = []
    for probe in (None, make_probe(dev, PARAMS)):
        torch.manual_seed(0)
        net = build_mlp(ModelParams(hidden=(16, 16), activation="noisy_relu"), transform)
        fit(net, train_split, dev, params, seed=3, probe=probe)
        weights.append(net.state_dict())
    for key, value in weights[0].items():
        assert torch.equal(value, weights[1][key]), key


def test_measure_matches_autograd_and_the_weights_it_was_given(data):
    _, dev, transform = data
    torch.manual_seed(0)
    net = build_mlp(ModelParams(hidden=(16,), batchnorm=False, dropout=0.0), transform).eval()
    before = weights_snapshot(net)
    with torch.no_grad():
        net.head.weight.mul_(2.0)  # an "update" equal to the head's weights at the start
    x = torch.from_numpy(dev[0][:50]).float()
    y = torch.from_numpy(dev[1][:50])
    figures = measure(net, (x, y), before, bins=10)
    torch.nn.functional.cross_entropy(net(x), y).backward()  # the oracle
    head, first = figures["layers"]["head"], figures["layers"]["blocks.0"]
    assert head["grad_norm"] == pytest.approx(net.head.weight.grad.norm().item(), rel=1e-5)
    assert head["update_ratio"] == pytest.approx(0.5, rel=1e-6)  # ‖2W - W‖ / ‖2W‖
    assert first["update_ratio"] == 0.0
    assert sum(head["histogram"]["counts"]) == net.head.weight.numel()
    relu_out = torch.relu(net.blocks[0].linear(net.preprocess(x)))
    assert first["act_mean"] == pytest.approx(relu_out.mean().item(), rel=1e-5)
    assert first["dead"] == pytest.approx((relu_out <= 0).all(dim=0).float().mean().item())
    assert first["saturated"] is None  # relu does not saturate
    assert "blocks.0/grad_norm" in scalar_figures(figures)
    assert not any("histogram" in key for key in scalar_figures(figures))


@pytest.mark.parametrize(("key", "value"), [("batch", 0), ("vanishing_ratio", 2.0)])
def test_bad_diagnostics_params_are_rejected_naming_the_key(key, value):
    with pytest.raises(ParamError, match=f"diagnostics.{key}"):
        parse_group(DiagnosticsParams, "diagnostics", {key: value})
