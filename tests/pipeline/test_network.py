import dataclasses
import typing

import numpy as np
import pytest
import torch

from pipeline.config import ParamError, parse_group
from pipeline.model.network import (
    MLP,
    Activation,
    ModelParams,
    NetSpec,
    build_mlp,
    init_weights,
    load_checkpoint,
    predict_logits,
    save_checkpoint,
)
from pipeline.model.transform import AffineTransform
from tests.conftest import make_digits


@pytest.fixture
def transform():
    rng = np.random.default_rng(0)
    return AffineTransform(
        mean=rng.uniform(0, 50, 784).astype(np.float32),
        matrix=rng.normal(0, 0.01, (784, 20)).astype(np.float32),
    )


@pytest.fixture
def pixels():
    x, _ = make_digits(16, seed=3)
    return x.reshape(16, 784)


@pytest.mark.parametrize("activation", typing.get_args(Activation))
def test_every_activation_builds_the_right_shapes(activation, transform, pixels):
    params = ModelParams(hidden=(12, 8), activation=activation, maxout_pieces=3)
    model = build_mlp(params, transform).eval()
    logits = model(torch.from_numpy(pixels).float())
    assert logits.shape == (16, 10) and torch.isfinite(logits).all()
    pieces = 3 if activation == "maxout" else 1
    assert [lin.weight.shape for lin in model.linears()] == [
        (12 * pieces, 20),
        (8 * pieces, 12),
        (10, 8),
    ]


# Each activation name's functional counterpart in torch (prelu with torch's default 0.25 slope).
FUNCTIONAL = {
    "sigmoid": torch.sigmoid,
    "tanh": torch.tanh,
    "relu": torch.nn.functional.relu,
    "noisy_relu": torch.nn.functional.relu,  # in eval mode: no noise
    "leaky_relu": lambda x: torch.nn.functional.leaky_relu(x, 0.05),
    "prelu": lambda x: torch.nn.functional.prelu(x, torch.full((x.shape[1],), 0.25)),
    "elu": torch.nn.functional.elu,
    "gelu": torch.nn.functional.gelu,
    "silu": torch.nn.functional.silu,
    "swish": torch.nn.functional.silu,
    "softplus": torch.nn.functional.softplus,
}
GRID = torch.linspace(-6, 6, 1001)


def block_of(transform, activation: str, width: int, pieces: int = 2) -> torch.nn.Module:
    """The first hidden block of an MLP with this activation, no BN or dropout, eval mode."""
    params = ModelParams(
        hidden=(width,),
        activation=activation,
        leaky_slope=0.05,
        maxout_pieces=pieces,
        batchnorm=False,
        dropout=0.0,
    )
    return build_mlp(params, transform).eval().blocks[0]


def shuffled_grid(columns: int) -> torch.Tensor:
    """(1001, columns): every column holds the whole grid, each in its own order."""
    gen = torch.Generator().manual_seed(0)
    return torch.stack([GRID[torch.randperm(len(GRID), generator=gen)] for _ in range(columns)], 1)


def test_functional_counterparts_cover_every_activation_but_maxout():
    assert set(FUNCTIONAL) == set(typing.get_args(Activation)) - {"maxout"}


@pytest.mark.parametrize("activation", FUNCTIONAL)
def test_every_activation_is_torchs_functional_counterpart(activation, transform):
    block = block_of(transform, activation, width=4)
    x = shuffled_grid(4)  # (1001, 4)
    with torch.no_grad():
        torch.testing.assert_close(block.act(x), FUNCTIONAL[activation](x), rtol=1e-6, atol=1e-7)
        z = shuffled_grid(block.linear.in_features)  # (1001, 20)
        expected = FUNCTIONAL[activation](block.linear(z))  # the block applies it after Linear
        torch.testing.assert_close(block(z), expected, rtol=1e-6, atol=1e-7)


def test_maxout_is_the_max_over_consecutive_pieces(transform):
    units, pieces = 4, 3
    block = block_of(transform, "maxout", width=units, pieces=pieces)
    x = shuffled_grid(units * pieces).numpy()  # (1001, 12)
    expected = np.empty((len(x), units), np.float32)
    for row in range(len(x)):
        for unit in range(units):
            expected[row, unit] = max(x[row, unit * pieces + k] for k in range(pieces))
    with torch.no_grad():
        got = block.act(torch.from_numpy(x)).numpy()
    np.testing.assert_array_equal(got, expected)
    assert block.linear.out_features == units * pieces


def test_the_network_takes_raw_pixels_through_the_fitted_transform(transform, pixels):
    torch.manual_seed(0)
    model = build_mlp(ModelParams(hidden=(12,), batchnorm=False, dropout=0.0), transform).eval()
    features = torch.from_numpy(transform.apply(pixels))  # numpy oracle of the transform
    expected = model.head(model.blocks[0](features))
    np.testing.assert_allclose(
        predict_logits(model, pixels), expected.detach().numpy(), rtol=1e-5, atol=1e-4
    )


@pytest.mark.parametrize(
    ("scheme", "std"),
    [
        ("he_normal", lambda fan_in, fan_out: (2 / fan_in) ** 0.5),
        ("he_uniform", lambda fan_in, fan_out: (2 / fan_in) ** 0.5),
        ("xavier_normal", lambda fan_in, fan_out: (2 / (fan_in + fan_out)) ** 0.5),
        ("xavier_uniform", lambda fan_in, fan_out: (2 / (fan_in + fan_out)) ** 0.5),
        ("lecun_normal", lambda fan_in, fan_out: (1 / fan_in) ** 0.5),
        ("lecun_uniform", lambda fan_in, fan_out: (1 / fan_in) ** 0.5),
        ("small_normal", lambda fan_in, fan_out: 0.01),  # the deliberately bad one
    ],
)
def test_init_schemes_give_their_textbook_weight_spread(scheme, std):
    torch.manual_seed(0)
    model = MLP(NetSpec.from_params(ModelParams(hidden=(400, 300), init=scheme), features=500))
    init_weights(model, scheme, leaky_slope=0.0)
    for linear in model.linears()[:2]:
        fan_out, fan_in = linear.weight.shape
        assert linear.weight.std().item() == pytest.approx(std(fan_in, fan_out), rel=0.03)
        assert torch.all(linear.bias == 0)


def test_checkpoint_round_trip_gives_identical_logits_for_narrow_folded_specs(
    tmp_path, transform, pixels
):
    model = build_mlp(ModelParams(hidden=(12, 8), activation="prelu"), transform)
    model.train()
    model(torch.from_numpy(pixels).float())  # move the BN running statistics off their init
    save_checkpoint(tmp_path / "a.pt", model, note="dense")
    loaded, extra = load_checkpoint(tmp_path / "a.pt")
    assert extra == {"note": "dense"} and not loaded.training
    np.testing.assert_array_equal(predict_logits(loaded, pixels), predict_logits(model, pixels))
    narrow = MLP(dataclasses.replace(model.spec, hidden=(5, 3), batchnorm=False, preprocess=False))
    save_checkpoint(tmp_path / "b.pt", narrow)
    again, _ = load_checkpoint(tmp_path / "b.pt")
    assert again.spec == narrow.spec and again.linears()[0].weight.shape == (5, 784)
    np.testing.assert_array_equal(predict_logits(again, pixels), predict_logits(narrow, pixels))


def test_predict_logits_is_batch_independent_and_keeps_the_mode(transform, pixels):
    model = build_mlp(ModelParams(hidden=(12,)), transform).train()
    whole = predict_logits(model, pixels)
    pieces = predict_logits(model, pixels, batch_size=5)
    np.testing.assert_allclose(whole, pieces, rtol=1e-5, atol=1e-4)  # float32 sum order
    assert model.training
    assert predict_logits(model, pixels[:0]).shape == (0, 10)


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        ({"hidden": [0]}, "model.hidden"),
        ({"dropout": [0.1, 0.2, 0.3]}, "model.dropout"),
        ({"dropout": 1.0}, "model.dropout"),
        ({"activation": "relu6"}, "model.activation"),
        ({"maxout_pieces": 1}, "model.maxout_pieces"),
        ({"noise_std": -1.0}, "model.noise_std"),
        ({"init_gain": 0.0}, "model.init_gain"),
    ],
)
def test_bad_model_params_are_rejected_naming_the_key(raw, key):
    with pytest.raises(ParamError, match=key):
        parse_group(ModelParams, "model", raw)


def test_the_same_weights_give_byte_identical_checkpoints(tmp_path, transform):
    model = build_mlp(ModelParams(hidden=(12,)), transform)
    save_checkpoint(tmp_path / "a.pt", model, note=1)
    save_checkpoint(tmp_path / "b.pt", model, note=1)
    assert (tmp_path / "a.pt").read_bytes() == (tmp_path / "b.pt").read_bytes()


def test_residual_layers_add_their_input_where_widths_match(transform, pixels):
    params = ModelParams(hidden=(12, 12, 8, 8), residual=True, batchnorm=False, dropout=0.0)
    model = build_mlp(params, transform).eval()
    assert model.skips == (False, True, False, True)
    with torch.no_grad():
        x = model.preprocess(torch.from_numpy(pixels).float())
        h0 = model.blocks[0](x)
        h1 = h0 + model.blocks[1](h0)
        h2 = model.blocks[2](h1)
        expected = model.head(h2 + model.blocks[3](h2))
    np.testing.assert_allclose(predict_logits(model, pixels), expected.numpy(), rtol=1e-6)


def test_without_the_residual_param_no_layer_skips(transform):
    model = build_mlp(ModelParams(hidden=(12, 12, 12)), transform)
    assert model.skips == (False, False, False)


def test_noisy_relu_adds_gaussian_noise_to_the_pre_activation_in_training_only(transform):
    params = ModelParams(hidden=(4,), activation="noisy_relu", noise_std=2.0, dropout=0.0)
    act = build_mlp(params, transform).blocks[0].act
    z = torch.zeros(200_000, 4)
    torch.manual_seed(0)
    noisy = act.train()(z)
    # relu(N(0, σ²)): half the values are 0, the mean is σ / sqrt(2π).
    assert (noisy == 0).float().mean().item() == pytest.approx(0.5, abs=0.01)
    assert noisy.mean().item() == pytest.approx(2.0 / (2 * np.pi) ** 0.5, rel=0.01)
    x = torch.linspace(-3, 3, 101)[:, None].repeat(1, 4)
    torch.testing.assert_close(act.eval()(x), torch.relu(x), rtol=0, atol=0)


def test_init_gain_and_bias_scale_the_scheme_and_set_hidden_biases(transform):
    torch.manual_seed(0)
    plain = build_mlp(ModelParams(hidden=(12, 8)), transform)
    torch.manual_seed(0)
    scaled = build_mlp(ModelParams(hidden=(12, 8), init_gain=3.0, init_bias=-2.0), transform)
    for a, b in zip(plain.linears(), scaled.linears(), strict=True):
        torch.testing.assert_close(b.weight, 3.0 * a.weight)
    assert all(torch.all(block.linear.bias == -2.0) for block in scaled.blocks)
    assert torch.all(scaled.head.bias == 0)


def test_residual_noisy_checkpoints_round_trip(tmp_path, transform, pixels):
    params = ModelParams(hidden=(8, 8), residual=True, activation="noisy_relu", noise_std=0.3)
    model = build_mlp(params, transform).eval()
    save_checkpoint(tmp_path / "r.pt", model)
    loaded, _ = load_checkpoint(tmp_path / "r.pt")
    assert loaded.spec == model.spec and loaded.skips == (False, True)
    assert loaded.blocks[0].act.std == 0.3
    np.testing.assert_array_equal(predict_logits(loaded, pixels), predict_logits(model, pixels))
