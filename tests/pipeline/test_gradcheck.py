import typing

import pytest
import torch
from click.testing import CliRunner

from digits.cli import cli
from pipeline.model.network import Activation
from pipeline.tools import gradcheck


@pytest.mark.parametrize("activation", typing.get_args(Activation))
def test_autograd_matches_finite_differences_for_every_activation(activation):
    errors = gradcheck.relative_errors(activation, l1=1e-3, l2=1e-2, eps=1e-6, margin=1e-3)
    names = {"blocks.0.linear.weight", "blocks.1.linear.bias", "head.weight", "head.bias"}
    assert names <= set(errors)
    assert max(errors.values()) < 1e-6, errors


def test_a_wrong_gradient_is_caught(monkeypatch):
    def half_l2_gradient(model, l1, l2=0.0):
        # Same value as penalty(), but the detached factor halves the L2 gradient.
        W = model.head.weight
        return 0.5 * l2 * (W * W.detach()).sum()

    monkeypatch.setattr(gradcheck, "penalty", half_l2_gradient)
    errors = gradcheck.relative_errors("tanh", l1=0.0, l2=10.0, eps=1e-6, margin=1e-3)
    assert errors["head.weight"] > 1e-3
    assert errors["blocks.0.linear.weight"] < 1e-6


def test_inputs_are_kept_away_from_kinks():
    model, x, _ = gradcheck.small_net("relu", seed=0)
    margin = gradcheck.kink_margin(model, x)
    z = model.blocks[0].linear(model.preprocess(x))
    assert 0 < margin <= z.abs().min().item()
    assert margin <= model.head.weight.abs().min().item()


def test_gradcheck_command_prints_every_tensor_and_fails_above_tolerance():
    result = CliRunner().invoke(cli, ["gradcheck", "-a", "prelu"])
    assert result.exit_code == 0, result.output
    assert "prelu       blocks.0.act.weight" in result.output
    assert "worst relative error" in result.output
    result = CliRunner().invoke(cli, ["gradcheck", "-a", "sigmoid", "--tolerance", "1e-30"])
    assert result.exit_code == 1
    assert result.output.strip().splitlines()[-1].startswith("Error: gradient check failed")


def test_small_net_is_float64_without_batchnorm_or_dropout():
    model, x, _ = gradcheck.small_net("gelu", seed=0)
    assert x.dtype == torch.float64 and all(p.dtype == torch.float64 for p in model.parameters())
    assert not model.spec.batchnorm and set(model.spec.dropout) == {0.0}
