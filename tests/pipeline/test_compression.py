"""Compression functions: pruning against a numpy oracle, folds against the unfolded network."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn.utils import prune

from pipeline.compression.folding import (
    fold_batchnorm,
    fold_preprocess,
    fold_preprocess_if_smaller,
    has_batchnorm,
    max_logit_diff,
    mixes_pixels,
    unmix_preprocess,
)
from pipeline.compression.pruning import (
    affordable_sparsity,
    allocate_sparsity,
    count_below,
    effective_weight,
    global_shares,
    importance,
    input_scales,
    layer_sensitivity,
    plain_copy,
    prune_layers,
    prune_magnitude,
    pruned_count,
    sparsity_schedule,
)
from pipeline.compression.shrink import residual_groups, shrink_hidden
from pipeline.compression.size import deployed_size, model_summary
from pipeline.model.network import MLP, ModelParams, build_mlp, predict_logits
from pipeline.model.transform import fit_transform
from pipeline.training.loop import fit
from pipeline.training.params import TrainParams
from tests.conftest import flat_digits


@pytest.fixture(scope="module")
def data() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Tiny train and dev splits."""
    return {"train": flat_digits(400, 1), "dev": flat_digits(200, 2)}


def make_model(
    data: dict,
    whitening: str = "none",
    activation: str = "relu",
    seed: int = 0,
    hidden: tuple[int, ...] = (32, 16),
    components: int | None = None,
    residual: bool = False,
) -> MLP:
    """A small BN MLP with non-trivial BN statistics and affine parameters (not fresh init)."""
    transform, _ = fit_transform(
        data["train"][0], "standardize", whitening=whitening, components=components
    )
    torch.manual_seed(seed)
    params = ModelParams(hidden=hidden, activation=activation, residual=residual)
    model = build_mlp(params, transform)
    for block in model.blocks:
        nn.init.normal_(block.linear.bias, 0.0, 0.5)  # shifts the running means off 0
        nn.init.normal_(block.norm.weight, 1.0, 0.5)
        nn.init.normal_(block.norm.bias, 0.0, 0.5)
        block.norm.momentum = None  # cumulative average: running stats of the whole data
    model.train()
    with torch.no_grad():
        model(torch.from_numpy(data["train"][0].astype(np.float32)))
    return model.eval()


def zero_positions(model: MLP) -> list[torch.Tensor]:
    """Where each Linear's effective weight is exactly zero."""
    return [effective_weight(linear) == 0 for linear in model.linears()]


def test_bn_statistics_of_the_fixture_are_not_the_identity(data):
    norm = make_model(data).blocks[0].norm
    assert norm.running_var.sub(1).abs().max() > 0.1
    assert norm.running_mean.abs().max() > 0.1
    assert norm.weight.sub(1).abs().max() > 0.1


@pytest.mark.parametrize("activation", ["relu", "prelu", "maxout"])
def test_fold_batchnorm_matches_the_unfolded_model_and_leaves_no_batchnorm(data, activation):
    model = make_model(data, activation=activation)
    folded = fold_batchnorm(model)
    assert not has_batchnorm(folded)
    assert folded.spec.batchnorm is False
    assert max_logit_diff(model, folded, data["dev"][0]) <= 1e-4


def test_fold_preprocess_matches_with_a_dense_whitening_matrix(data):
    model = make_model(data, whitening="zca")
    folded = fold_preprocess(model)
    assert folded.spec.preprocess is False
    assert not any("preprocess" in key for key in folded.state_dict())
    assert folded.blocks[0].linear.in_features == 784
    assert max_logit_diff(model, folded, data["dev"][0]) <= 1e-4


def test_pruned_weights_stay_zero_through_fine_tuning_and_both_folds(data):
    model = make_model(data)
    prune_magnitude(model, 0.8)
    zeros = zero_positions(model)
    start = [effective_weight(linear) for linear in model.linears()]
    params = TrainParams(epochs=2, batch_size=64, lr=1e-2, l1=1e-4)
    fit(model, data["train"], data["dev"], params)
    for before, after in zip(zeros, zero_positions(model), strict=True):
        assert torch.equal(before, after)  # masked entries stayed 0, no others became 0
    moved = [effective_weight(lin) - w for lin, w in zip(model.linears(), start, strict=True)]
    assert all(delta.abs().max() > 1e-3 for delta in moved)  # the weights really trained
    folded = fold_preprocess(fold_batchnorm(model))
    for before, linear in zip(zeros, folded.linears(), strict=True):
        assert (linear.weight[before] == 0).all()
    assert model_summary(folded)["sparsity"] == pytest.approx(0.8, abs=1e-3)


def test_global_magnitude_pruning_removes_the_smallest_weights_as_numpy_ranks_them(data):
    model = make_model(data)
    weights = np.concatenate([lin.weight.detach().numpy().ravel() for lin in model.linears()])
    prune_magnitude(model, 0.7)
    kept = np.concatenate([effective_weight(lin).numpy().ravel() for lin in model.linears()])
    n_pruned = round(0.7 * weights.size)
    order = np.argsort(np.abs(weights), kind="stable")
    assert (kept[order[:n_pruned]] == 0).all()
    assert (kept[order[n_pruned:]] == weights[order[n_pruned:]]).all()


def test_iterative_pruning_keeps_earlier_masks_and_hits_each_target(data):
    model = make_model(data)
    masks = None
    for target in sparsity_schedule(0.9, 3):
        prune_magnitude(model, target)
        assert model_summary(model)["sparsity"] == pytest.approx(target, abs=1e-4)
        new = zero_positions(model)
        if masks is not None:
            assert all((new_z | ~old_z).all() for old_z, new_z in zip(masks, new, strict=True))
        masks = new


def test_layer_scope_prunes_every_layer_to_the_target(data):
    model = make_model(data)
    prune_magnitude(model, 0.6, scope="layer")
    layers = model_summary(model)["layers"]
    assert [row["sparsity"] for row in layers] == pytest.approx([0.6] * 3, abs=0.01)


def test_sparsity_schedule_removes_an_equal_share_of_survivors_each_step():
    schedule = sparsity_schedule(0.9, 3)
    assert schedule[-1] == pytest.approx(0.9)
    survivors = [1.0] + [1 - s for s in schedule]
    ratios = [b / a for a, b in zip(survivors, survivors[1:], strict=False)]
    assert ratios == pytest.approx([0.1 ** (1 / 3)] * 3)


@pytest.mark.parametrize("activation", ["relu", "prelu", "maxout"])
def test_shrink_hidden_equals_the_model_with_the_removed_units_silenced(data, activation):
    model = make_model(data, activation=activation)
    shrunk = shrink_hidden(model, 0.5)
    assert shrunk.spec.hidden == (16, 8)
    # Oracle: zero the outgoing weights of every unit that is gone; outputs must not change.
    silenced = plain_copy(model).eval()
    nxt = [silenced.blocks[1].linear, silenced.head]
    kept_ids = [kept_units(model, shrunk, i) for i in range(2)]
    with torch.no_grad():
        for linear, kept, width in zip(nxt, kept_ids, model.spec.hidden, strict=True):
            gone = sorted(set(range(width)) - set(kept))
            linear.weight[:, gone] = 0
    assert max_logit_diff(silenced, shrunk, data["dev"][0]) <= 1e-4


def kept_units(model: MLP, shrunk: MLP, index: int) -> list[int]:
    """Which of the model's units in hidden layer `index` survive, matched by their BN mean."""
    old = model.blocks[index].norm.running_mean.tolist()
    new = shrunk.blocks[index].norm.running_mean.tolist()
    pieces = len(old) // model.spec.hidden[index]
    return [old.index(v) // pieces for v in new[::pieces]]


def test_shrink_hidden_removes_the_units_nothing_downstream_uses(data):
    model = make_model(data)
    with torch.no_grad():
        model.head.weight[:, :8] = 0  # units 0–7 of the last hidden layer feed nothing
    shrunk = shrink_hidden(model, 0.5)
    assert kept_units(model, shrunk, 1) == list(range(8, 16))


def test_shrink_hidden_refuses_a_masked_model(data):
    model = make_model(data)
    prune_magnitude(model, 0.5)
    with pytest.raises(ValueError, match="before magnitude pruning"):
        shrink_hidden(model, 0.5)


def test_model_summary_counts_parameters_and_flops_by_hand(data):
    model = fold_preprocess(fold_batchnorm(make_model(data)))
    with torch.no_grad():
        model.head.weight[:4] = 0  # 4 rows of 16 weights
    summary = model_summary(model)
    weights = 784 * 32 + 32 * 16 + 16 * 10
    assert summary["params_total"] == weights + 32 + 16 + 10
    assert summary["flops_per_sample"] == 2 * weights
    assert summary["flops_per_sample_nonzero"] == 2 * (weights - 64)
    assert summary["layers"][2]["nonzero"] == 160 - 64
    assert summary["sparsity"] == pytest.approx(64 / weights)


def test_count_below_sees_masked_weights_as_zero(data):
    model = make_model(data)
    assert count_below(model, 1e-6) == 0
    prune_magnitude(model, 0.5)
    total = sum(linear.weight.numel() for linear in model.linears())
    assert count_below(model, 1e-6) == round(0.5 * total)


def test_plain_copy_is_independent_and_has_no_masks(data):
    model = make_model(data)
    prune_magnitude(model, 0.5)
    copy = plain_copy(model)
    assert not any(key.endswith("_mask") for key in copy.state_dict())
    np.testing.assert_array_equal(
        predict_logits(copy, data["dev"][0]), predict_logits(model, data["dev"][0])
    )
    with torch.no_grad():
        copy.head.bias.add_(1.0)
    assert not torch.equal(copy.head.bias, model.head.bias)
    assert dataclasses.asdict(copy.spec) == dataclasses.asdict(model.spec)


def test_model_summary_counts_preprocessing_and_batchnorm_flops_by_hand(data):
    model = make_model(data)  # standardize: a (784, 784) preprocessing matrix, BN on 32 and 16
    summary = model_summary(model)
    weights = 784 * 32 + 32 * 16 + 16 * 10
    extra = 2 * 784 * 784 + 784 + 2 * (32 + 16)  # (x - mean) @ M, then a multiply-add per BN unit
    assert summary["flops_per_sample"] == 2 * weights + extra
    assert summary["flops_per_sample_nonzero"] == 2 * weights + extra  # nothing pruned yet
    assert summary["hidden"] == [32, 16]
    nonzero = sum(int((p != 0).sum()) for p in model.parameters())
    assert summary["params_nonzero"] == nonzero
    linears = [name for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    assert [row["layer"] for row in summary["layers"]] == linears
    assert [row["shape"] for row in summary["layers"]] == [[32, 784], [16, 32], [10, 16]]


def test_layer_scope_iterative_pruning_removes_each_layers_smallest_survivors(data):
    model = make_model(data)
    original = [lin.weight.detach().numpy().ravel().copy() for lin in model.linears()]
    for target in sparsity_schedule(0.8, 3):
        prune_magnitude(model, target, scope="layer")
    for w, lin in zip(original, model.linears(), strict=True):
        kept = effective_weight(lin).numpy().ravel()
        n_pruned = round(0.8 * w.size)
        order = np.argsort(np.abs(w), kind="stable")  # numpy's ranking within the layer
        assert (kept[order[:n_pruned]] == 0).all()
        assert (kept[order[n_pruned:]] == w[order[n_pruned:]]).all()


def test_layer_scope_prunes_a_single_weight_and_zero_sparsity_adds_no_mask(data):
    model = make_model(data)
    prune_magnitude(model, 0.0, scope="layer")
    assert not any(prune.is_pruned(lin) for lin in model.linears())
    prune_magnitude(model, 1 / 160, scope="layer")  # the head has 160 weights: exactly one goes
    assert model_summary(model)["layers"][2]["nonzero"] == 159


def test_count_below_is_strict_at_the_threshold(data):
    model = make_model(data)
    weights = np.concatenate([lin.weight.detach().numpy().ravel() for lin in model.linears()])
    threshold = float(np.sort(np.abs(weights))[1000])  # exactly one weight's magnitude
    assert count_below(model, threshold) == int((np.abs(weights) < threshold).sum())


@pytest.mark.parametrize(
    ("activation", "hidden"), [("relu", (32, 16)), ("maxout", (32, 16)), ("relu", (32, 16, 8))]
)
def test_shrink_hidden_keeps_the_units_with_the_largest_folded_score(data, activation, hidden):
    model = make_model(data, activation=activation, hidden=hidden)
    folded = fold_batchnorm(model)  # the score is that of the folded network
    shrunk = shrink_hidden(model, 0.5)
    outgoing = [block.linear for block in model.blocks[1:]] + [model.head]
    for i, width in enumerate(model.spec.hidden):
        W_in = folded.blocks[i].linear.weight.detach().numpy()  # (units*pieces, fan_in)
        W_out = outgoing[i].weight.detach().numpy()  # (next, units)
        incoming = np.linalg.norm(W_in, axis=1).reshape(width, -1).sum(axis=1)
        score = incoming * np.linalg.norm(W_out, axis=0)
        expected = sorted(np.argsort(score)[::-1][: width // 2].tolist())
        assert kept_units(model, shrunk, i) == expected


def test_shrink_hidden_never_removes_a_layers_last_unit(data):
    assert shrink_hidden(make_model(data), 1.0).spec.hidden == (1, 1)


@pytest.mark.parametrize("hidden", [(32, 16), ()])
def test_fold_preprocess_matches_with_fewer_pca_components_than_pixels(data, hidden):
    transform, _ = fit_transform(data["train"][0], "standardize", whitening="pca", components=50)
    torch.manual_seed(0)
    model = build_mlp(ModelParams(hidden=hidden, dropout=0.0), transform).eval()
    folded = fold_preprocess(model)
    assert folded.spec.features == 784 and folded.linears()[0].in_features == 784
    assert max_logit_diff(model, folded, data["dev"][0]) <= 1e-4


def test_global_pruning_removes_a_single_weight_and_zero_sparsity_adds_no_mask(data):
    model = make_model(data)
    prune_magnitude(model, 0.0)
    assert not any(prune.is_pruned(lin) for lin in model.linears())
    total = sum(lin.weight.numel() for lin in model.linears())
    prune_magnitude(model, 1 / total)
    layers = model_summary(model)["layers"]
    assert sum(row["nonzero"] for row in layers) == total - 1


def test_allocation_gives_less_sparsity_to_the_layer_that_costs_more():
    levels = (0.5, 0.8, 0.9)
    drops = [[0.0, 0.01, 0.02], [0.05, 0.2, 0.4]]  # layer 1 hurts far more at every level
    shares = allocate_sparsity(levels, drops, sizes=[1000, 1000], target=0.6)
    assert shares[0] > shares[1]
    assert shares[0] * 1000 + shares[1] * 1000 == pytest.approx(0.6 * 2000)


def test_allocation_weighs_layers_by_size_and_reaches_the_global_target():
    levels = (0.5, 0.9)
    drops = [[0.01, 0.02], [0.01, 0.02]]  # equally sensitive: equal shares, whatever the sizes
    shares = allocate_sparsity(levels, drops, sizes=[9000, 1000], target=0.7)
    assert shares == pytest.approx([0.7, 0.7])


def test_allocation_that_cannot_reach_the_target_stops_at_the_deepest_level():
    assert allocate_sparsity((0.5, 0.9), [[0.1, 0.2]], sizes=[100], target=0.95) == [0.9]


def test_affordable_sparsity_interpolates_and_never_trusts_a_cheaper_deeper_cut():
    assert affordable_sparsity((0.5, 0.9), [0.1, 0.3], budget=0.2) == pytest.approx(0.7)
    # A noisy measurement (deeper cut measured cheaper) counts at the shallower cut's cost.
    assert affordable_sparsity((0.5, 0.9), [0.3, 0.1], budget=0.2) == pytest.approx(1 / 3)


def test_layer_sensitivity_prunes_one_layer_at_a_time_and_leaves_the_model_alone(data):
    model = make_model(data)
    before = [effective_weight(linear).clone() for linear in model.linears()]
    seen = []

    def score(pruned: MLP) -> float:
        seen.append(
            [float((effective_weight(lin) == 0).float().mean()) for lin in pruned.linears()]
        )
        return 0.0

    drops = layer_sensitivity(model, score, (0.5,))
    assert drops == [[0.0]] * 3
    assert seen[1:] == [
        pytest.approx([0.5, 0, 0], abs=1e-3),
        pytest.approx([0, 0.5, 0], abs=1e-3),
        pytest.approx([0, 0, 0.5], abs=1e-3),
    ]
    for W, linear in zip(before, model.linears(), strict=True):
        torch.testing.assert_close(effective_weight(linear), W)


def test_prune_layers_hits_each_layers_own_share(data):
    model = make_model(data)
    prune_layers(model, [0.9, 0.5, 0.0])
    shares = [float((effective_weight(lin) == 0).float().mean()) for lin in model.linears()]
    assert shares == pytest.approx([0.9, 0.5, 0.0], abs=1e-3)


@pytest.mark.parametrize(
    ("whitening", "components", "hidden", "folded"),
    [
        ("none", None, (32, 16), True),  # a diagonal map keeps zeros: folding is free
        ("pca", 20, (32, 16), False),  # 784x20 map + sparse W beats a dense (32, 784)
        ("zca", None, (32, 16), True),  # 32 x 784 dense is still smaller than a 784x784 map
        ("zca", None, (1600, 16), False),  # wide and sparse: the map is cheaper than densifying
    ],
)
def test_fold_preprocess_if_smaller_picks_the_smaller_model_and_keeps_the_output(
    data, whitening, components, hidden, folded
):
    model = fold_batchnorm(make_model(data, whitening, hidden=hidden, components=components))
    prune_magnitude(model, 0.9)
    result, costs = fold_preprocess_if_smaller(model)
    assert costs["folded"] is folded and result.spec.preprocess is not folded
    assert costs["folded_params"] == int(
        effective_weight(fold_preprocess(model).linears()[0]).count_nonzero()
    )
    assert (costs["folded_params"] <= costs["kept_params"]) is folded
    assert max_logit_diff(model, result, data["dev"][0]) <= 1e-4
    size = deployed_size(result)
    nonzero = sum(int(effective_weight(lin).count_nonzero()) for lin in result.linears())
    assert size["weights_nonzero"] == nonzero
    assert size["macs_per_image"] == nonzero + (0 if folded else costs["map_entries"])


def test_residual_groups_join_the_layers_a_skip_connects():
    assert residual_groups((False, True, True, False, True)) == [[0, 1, 2], [3, 4]]
    assert residual_groups((False, False)) == [[0], [1]]


def test_shrink_hidden_keeps_one_set_of_units_along_a_residual_stream(data):
    model = make_model(data, hidden=(16, 16, 16, 8), residual=True)
    assert model.skips == (False, True, True, False)
    shrunk = shrink_hidden(model, 0.5)
    assert shrunk.spec.hidden == (8, 8, 8, 4) and shrunk.skips == model.skips
    kept = [kept_units(model, shrunk, i) for i in range(4)]
    assert kept[0] == kept[1] == kept[2]  # the skips add unit j to unit j: the same j survive
    # Oracle: the unshrunk model with the removed coordinates of each layer's output zeroed.
    masks = [
        torch.zeros(w).index_fill_(0, torch.tensor(k), 1.0)
        for w, k in zip((16, 16, 16, 8), kept, strict=True)
    ]
    with torch.no_grad():
        x = model.preprocess(torch.from_numpy(data["dev"][0]).float())
        for block, skip, mask in zip(model.blocks, model.skips, masks, strict=True):
            x = (x + block(x) if skip else block(x)) * mask
        expected = model.head(x).numpy()
    np.testing.assert_allclose(predict_logits(shrunk, data["dev"][0]), expected, atol=1e-4)


def test_a_shrunk_pruned_residual_network_folds_to_the_same_outputs(data):
    model = shrink_hidden(make_model(data, hidden=(16, 16, 16), residual=True), 0.25)
    prune_magnitude(model, 0.6)
    folded = fold_preprocess(fold_batchnorm(model))
    assert not has_batchnorm(folded) and folded.skips == (False, True, True)
    assert max_logit_diff(model, folded, data["dev"][0]) <= 1e-3


@pytest.mark.parametrize("options", [{"whitening": "pca", "components": 20}, {"whitening": "zca"}])
def test_unmixing_a_whitening_map_keeps_the_function_and_leaves_a_scaled_identity(options):
    train = flat_digits(300, 1)
    transform, _ = fit_transform(train[0], "standardize", **options)
    torch.manual_seed(0)
    model = build_mlp(ModelParams(hidden=(24, 12)), transform).eval()
    assert mixes_pixels(model)
    unmixed = unmix_preprocess(model, 0.0125).eval()
    assert not mixes_pixels(unmixed)
    assert torch.equal(unmixed.preprocess.matrix, torch.eye(784) * 0.0125)
    assert unmixed.linears()[0].weight.shape == (24, 784)
    assert max_logit_diff(model, unmixed, train[0]) < 1e-3


def test_input_scales_are_each_inputs_std_over_its_layers_mean(data):
    model = make_model(data)
    x = data["train"][0]
    scales = input_scales(model, x)
    assert [len(s) for s in scales] == [lin.in_features for lin in model.linears()]
    for scale in scales:
        assert float(scale.mean()) == pytest.approx(1.0, rel=1e-5)
    pixels = torch.from_numpy(x.astype(np.float32))
    std = model.preprocess(pixels).std(dim=0)
    torch.testing.assert_close(scales[0], std / std.mean())
    assert model.training is False  # the model is left in the mode it came in


def test_input_scaled_pruning_removes_weights_on_inputs_that_never_vary_first(data):
    x = data["train"][0].copy()
    x[:, :40] = 0  # border pixels: the same in every image
    models = {}
    for name in ("input_scaled", "magnitude"):
        model = make_model(data)
        first = model.linears()[0]
        with torch.no_grad():
            first.weight[:, :40] = 10.0 * first.weight.abs().max()  # the largest weights of all
        models[name] = model
    scales = input_scales(models["input_scaled"], x)
    assert (scales[0][:40] < 1e-6).all() and (scales[0][40:] > 0).any()
    # Weights on inputs that never vary (the constant pixels; units never active) count zero.
    linears = models["input_scaled"].linears()
    idle = sum(int((importance(lin, s) == 0).sum()) for lin, s in zip(linears, scales, strict=True))
    share = idle / sum(lin.weight.numel() for lin in linears)
    prune_magnitude(models["input_scaled"], share, "global", scales)
    prune_magnitude(models["magnitude"], share, "global")
    assert (effective_weight(models["input_scaled"].linears()[0])[:, :40] == 0).all()
    assert (effective_weight(models["magnitude"].linears()[0])[:, :40] != 0).all()


def test_global_shares_are_the_shares_global_magnitude_pruning_takes_per_layer(data):
    model = make_model(data)
    shares = global_shares(model.linears(), 0.7)
    prune_magnitude(model, 0.7)
    taken = [pruned_count(lin) / lin.weight.numel() for lin in model.linears()]
    assert shares == pytest.approx(taken)
    assert len(set(shares)) > 1  # the layers lose different shares
