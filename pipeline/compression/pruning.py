"""Compression of an MLP: magnitude pruning, neuron (structured) pruning, and folding.

Pure functions on `pipeline.network.MLP`. Unstructured pruning uses torch.nn.utils.prune
masks (fixed while fine-tuning); structured pruning and the folds return new, smaller or
simpler networks whose NetSpec says so, so they save and reload through the usual checkpoint.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable
from typing import Literal

import numpy as np
import torch
from torch import nn
from torch.nn.utils import prune
from torch.nn.utils.fusion import fuse_linear_bn_eval

from pipeline.network import MLP, PIXELS, predict_logits

Scope = Literal["global", "layer"]


def effective_weight(linear: nn.Linear) -> torch.Tensor:
    """The weight the layer computes with: weight_orig * mask when pruned (never stale)."""
    if prune.is_pruned(linear):
        return (linear.weight_orig * linear.weight_mask).detach()
    return linear.weight.detach()


def plain_copy(model: MLP) -> MLP:
    """An independent copy with every pruning mask baked into its weight (zeros stay exact)."""
    source = model.state_dict()
    state = {}
    for key, value in source.items():
        if key.endswith("weight_mask"):
            continue
        if key.endswith("weight_orig"):
            value = value * source[key.replace("_orig", "_mask")]
            key = key.replace("weight_orig", "weight")
        state[key] = value.detach().clone()
    clone = MLP(model.spec)
    clone.load_state_dict(state)
    return clone.train(model.training)


def pruned_count(linear: nn.Linear) -> int:
    """How many of the layer's weights its mask already removes (0 when unpruned)."""
    return int((linear.weight_mask == 0).sum()) if prune.is_pruned(linear) else 0


def input_scales(model: MLP, x: np.ndarray) -> list[torch.Tensor]:
    """Per Linear, the std of each of its inputs over raw pixels x (N, 784), over their mean
    (1 on average): how much each weight's input varies, the part of |w|·|input| BatchNorm keeps."""
    linears, seen = model.linears(), []
    hooks = [lin.register_forward_pre_hook(lambda _, args: seen.append(args[0])) for lin in linears]
    was_training = model.training
    try:
        with torch.no_grad():
            model.eval()(torch.from_numpy(np.asarray(x, dtype=np.float32)))
    finally:
        for hook in hooks:
            hook.remove()
        model.train(was_training)
    stds = [inputs.std(dim=0) for inputs in seen]
    return [std / std.mean().clamp_min(1e-12) for std in stds]


def importance(linear: nn.Linear, scale: torch.Tensor | None) -> torch.Tensor:
    """|w|, or |w| times its input's relative scale (Wanda, Sun et al. 2023, per input)."""
    magnitude = effective_weight(linear).abs()
    return magnitude if scale is None else magnitude * scale[None, :]


def prune_magnitude(
    model: MLP,
    sparsity: float,
    scope: Scope = "global",
    scales: list[torch.Tensor] | None = None,
) -> None:
    """Mask the least important Linear weights (in place) until `sparsity` of them are masked.

    Importance is |w|; with `scales` (input_scales), each layer loses the share global |w|
    ranking gives it, chosen within the layer by |w| times its input's relative scale.
    Existing masks are kept (torch's PruningContainer prunes only among the survivors), so
    calling this with a rising target is the iterative prune step of Han et al. (2015).
    """
    linears = model.linears()
    if scope == "layer":
        prune_layers(model, [sparsity] * len(linears), scales)
        return
    if scales is not None:  # each layer's share as |w| ranks them globally, chosen within it
        prune_layers(model, global_shares(linears, sparsity), scales)
        return
    total = sum(linear.weight.numel() for linear in linears)
    more = round(sparsity * total) - sum(pruned_count(linear) for linear in linears)
    if more > 0:
        prune.global_unstructured(
            [(linear, "weight") for linear in linears],
            pruning_method=prune.L1Unstructured,
            importance_scores={(lin, "weight"): importance(lin, None) for lin in linears},
            amount=more,
        )


def global_shares(linears: list[nn.Linear], sparsity: float) -> list[float]:
    """Each layer's pruned share when the smallest |w| of all layers together are pruned."""
    weights = [importance(linear, None).ravel() for linear in linears]
    every = torch.cat(weights)
    count = round(sparsity * every.numel())
    if count == 0:
        return [0.0] * len(linears)
    # Ties at the threshold go to the earlier layers, as a stable global sort would send them.
    order = torch.argsort(every, stable=True)[:count]
    bounds = np.cumsum([0] + [w.numel() for w in weights])
    taken = np.histogram(order.numpy(), bins=bounds)[0]
    return [int(t) / w.numel() for t, w in zip(taken, weights, strict=True)]


def prune_layers(
    model: MLP, sparsities: list[float], scales: list[torch.Tensor] | None = None
) -> None:
    """Mask each Linear's least important weights (in place) until its own share is masked."""
    linears = model.linears()
    per_layer = scales or [None] * len(linears)
    for linear, sparsity, scale in zip(linears, sparsities, per_layer, strict=True):
        more = round(sparsity * linear.weight.numel()) - pruned_count(linear)
        if more > 0:
            scores = importance(linear, scale)
            prune.l1_unstructured(linear, "weight", amount=more, importance_scores=scores)


def layer_sensitivity(
    model: MLP, score: Callable[[MLP], float], levels: tuple[float, ...]
) -> list[list[float]]:
    """Per Linear, the drop of `score` when that layer alone is one-shot pruned to each level."""
    base = score(model)
    drops = []
    for index in range(len(model.linears())):
        row = []
        for level in levels:
            pruned = plain_copy(model).eval()
            sparsities = [0.0] * len(pruned.linears())
            sparsities[index] = level
            prune_layers(pruned, sparsities)
            row.append(base - score(pruned))
        drops.append(row)
    return drops


def affordable_sparsity(levels: tuple[float, ...], drops: list[float], budget: float) -> float:
    """The highest sparsity whose (interpolated, made non-decreasing) drop is within budget."""
    xs = [0.0, *levels]
    ys = list(np.maximum.accumulate([0.0, *drops]))  # a deeper cut never costs less
    for i in range(1, len(xs)):
        if ys[i] > budget:  # the budget runs out inside this segment (ys[i - 1] <= budget)
            return xs[i - 1] + (xs[i] - xs[i - 1]) * (budget - ys[i - 1]) / (ys[i] - ys[i - 1])
    return xs[-1]


def allocate_sparsity(
    levels: tuple[float, ...], drops: list[list[float]], sizes: list[int], target: float
) -> list[float]:
    """Per-layer sparsities reaching `target` overall where pruning costs least (Han et al. 2015).

    Every layer is pruned as far as one shared budget of measured drop allows; the smallest
    budget whose pruned weights reach the global target is found by bisection.
    """
    goal = target * sum(sizes)

    def allocation(budget: float) -> list[float]:
        return [affordable_sparsity(levels, row, budget) for row in drops]

    def pruned(budget: float) -> float:
        return sum(s * n for s, n in zip(allocation(budget), sizes, strict=True))

    low, high = 0.0, max(1e-12, max(max(row) for row in drops) if drops else 0.0)
    if pruned(high) < goal:  # even the deepest measured cuts fall short: take them all
        return allocation(high)
    for _ in range(60):
        mid = (low + high) / 2
        low, high = (mid, high) if pruned(mid) < goal else (low, mid)
    # Bisection stops a little over the goal (pruned(high) >= goal): scale the shares back so
    # the layers remove exactly the target share.
    scale = goal / max(pruned(high), 1e-12)
    return [share * scale for share in allocation(high)]


def sparsity_schedule(target: float, steps: int) -> list[float]:
    """Targets for `steps` prune steps that each remove the same share of the survivors."""
    return [1 - (1 - target) ** (k / steps) for k in range(1, steps + 1)]


def count_below(model: MLP, threshold: float) -> int:
    """How many Linear weights have |w| < threshold (masked ones included)."""
    return sum(int((effective_weight(lin).abs() < threshold).sum()) for lin in model.linears())


def unit_scores(model: MLP, index: int) -> torch.Tensor:
    """Importance of each unit of hidden layer `index`: |BN scale|·‖w_in‖·‖w_out‖.

    The BN scale makes the score that of the folded network, where a unit's incoming row is
    what BatchNorm rescales; the outgoing column norm says how much the next layer uses it.
    """
    block = model.blocks[index]
    W_in = effective_weight(block.linear)  # (units*pieces, fan_in)
    if isinstance(block.norm, nn.BatchNorm1d):
        scale = block.norm.weight.detach() / torch.sqrt(block.norm.running_var + block.norm.eps)
        W_in = W_in * scale[:, None]
    nxt = model.blocks[index + 1].linear if index + 1 < len(model.blocks) else model.head
    W_out = effective_weight(nxt)  # (next, units)
    incoming = W_in.norm(dim=1).view(W_out.shape[1], -1).sum(dim=1)  # maxout: sum over pieces
    return incoming * W_out.norm(dim=0)  # (units,)


def residual_groups(skips: tuple[bool, ...]) -> list[list[int]]:
    """Hidden layers joined by skip connections: each group shares one residual stream."""
    groups: list[list[int]] = []
    for i, skip in enumerate(skips):
        if skip:
            groups[-1].append(i)
        else:
            groups.append([i])
    return groups


def shrink_hidden(model: MLP, fraction: float) -> MLP:
    """A copy with `fraction` of each hidden layer's units removed, lowest score first.

    Layers joined by skip connections add their units coordinate by coordinate, so they keep
    the same units: those with the highest score summed over the group.
    """
    if any(prune.is_pruned(linear) for linear in model.linears()):
        raise ValueError("shrink_hidden needs an unmasked model: shrink before magnitude pruning")
    state = {k: v.clone() for k, v in model.state_dict().items()}
    widths = list(model.spec.hidden)
    for group in residual_groups(model.spec.skips()):
        width = widths[group[0]]
        keep_n = max(1, width - int(fraction * width))
        score = sum(unit_scores(model, i) for i in group)
        keep = score.topk(keep_n).indices.sort().values  # (keep_n,)
        for i in group:
            widths[i] = keep_n
            drop_units(state, model, i, keep)
    shrunk = MLP(dataclasses.replace(model.spec, hidden=tuple(widths)))
    shrunk.load_state_dict(state)
    return shrunk.train(model.training)


def drop_units(state: dict[str, torch.Tensor], model: MLP, index: int, keep: torch.Tensor) -> None:
    """Keep units `keep` of hidden layer `index` in `state`: its rows, the next layer's columns."""
    width = model.spec.hidden[index]
    pieces = model.blocks[index].linear.out_features // width
    rows = (keep[:, None] * pieces + torch.arange(pieces)).flatten()  # maxout piece rows
    for key in [k for k in state if k.startswith(f"blocks.{index}.")]:
        if key.endswith("num_batches_tracked"):
            continue
        state[key] = state[key][keep] if ".act." in key else state[key][rows]
    last = index + 1 == len(model.spec.hidden)
    nxt = "head.weight" if last else f"blocks.{index + 1}.linear.weight"
    state[nxt] = state[nxt][:, keep]


def fold_batchnorm(model: MLP) -> MLP:
    """A BN-free copy: each BatchNorm1d folded into the Linear before it; pruned zeros stay 0."""
    source = plain_copy(model).eval()
    folded = MLP(dataclasses.replace(source.spec, batchnorm=False))
    state = {k: v for k, v in source.state_dict().items() if ".norm." not in k}
    for i, block in enumerate(source.blocks):
        if isinstance(block.norm, nn.BatchNorm1d):
            # Fold in float64: the rounding then happens once, on the final weights.
            fused = fuse_linear_bn_eval(copy.deepcopy(block.linear).double(), block.norm.double())
            state[f"blocks.{i}.linear.weight"] = fused.weight.detach().float()
            state[f"blocks.{i}.linear.bias"] = fused.bias.detach().float()
    folded.load_state_dict(state)
    return folded.eval()


def fold_preprocess(model: MLP) -> MLP:
    """A copy taking raw pixels: (pixels - mean) @ matrix folded into the first Linear."""
    source = plain_copy(model).eval()
    if not source.spec.preprocess:
        return source
    first = "blocks.0.linear" if source.spec.hidden else "head"
    state = {k: v for k, v in source.state_dict().items() if not k.startswith("preprocess.")}
    M = source.preprocess.matrix.double()  # (784, k)
    mean = source.preprocess.mean.double()  # (784,)
    W = state[f"{first}.weight"].double()  # (out, k)
    W_pix = W @ M.T  # (out, k) -> (out, 784)
    state[f"{first}.weight"] = W_pix.float()
    state[f"{first}.bias"] = (state[f"{first}.bias"].double() - W_pix @ mean).float()
    folded = MLP(dataclasses.replace(source.spec, preprocess=False, features=PIXELS))
    folded.load_state_dict(state)
    return folded.eval()


def mixes_pixels(model: MLP) -> bool:
    """Whether the fixed map mixes pixels (PCA, ZCA), not just centres and scales them."""
    if not model.spec.preprocess:
        return False
    M = model.preprocess.matrix  # (784, k)
    return M.shape[0] != M.shape[1] or bool((M - torch.diag(M.diagonal())).count_nonzero())


def unmix_preprocess(model: MLP, scale: float) -> MLP:
    """A copy whose map only centres and scales, (pixels - mean) * scale; the mixing is folded.

    W @ matrix.T / scale goes into the first Linear, so the network computes the same function
    and its first layer's weights act on pixels at a standardized scale (the fine-tune's lr
    suits them, as it suits an unwhitened model's).
    """
    source = plain_copy(model)
    first = "blocks.0.linear" if source.spec.hidden else "head"
    state = source.state_dict()
    M = state.pop("preprocess.matrix").double()  # (784, k)
    W = state[f"{first}.weight"].double()  # (out, k)
    state[f"{first}.weight"] = (W @ M.T / scale).float()
    state["preprocess.matrix"] = torch.eye(PIXELS) * scale
    unmixed = MLP(dataclasses.replace(source.spec, features=PIXELS))
    unmixed.load_state_dict(state)
    return unmixed.train(model.training)


def preprocess_costs(model: MLP) -> dict:
    """Size of the first layer with the fixed map kept in front vs folded in (weights, MACs).

    Kept: the map (dense MatMul, 784 x k multiply-adds per image, plus the 784-entry mean) and
    the first layer's nonzero weights. Folded: the nonzero weights of W @ matrix.T, which is
    dense whenever the map mixes pixels (PCA, ZCA), however sparse W was.
    """
    # No network is built here: building one draws from torch's RNG, and the default path
    # must draw exactly as it did before this choice existed.
    W = effective_weight(model.linears()[0])  # (out, k)
    M = model.preprocess.matrix  # (784, k)
    folded = int((W.double() @ M.double().T).float().count_nonzero())  # as fold_preprocess does
    kept = M.numel() + PIXELS + int(W.count_nonzero())
    return {
        "map_shape": list(M.shape),
        "map_entries": M.numel(),
        "kept_params": kept,
        "folded_params": folded,
        "fold": folded <= kept,
    }


def fold_preprocess_if_smaller(model: MLP) -> tuple[MLP, dict]:
    """Fold the fixed map into the first Linear only when that makes the model smaller."""
    if not model.spec.preprocess:
        return plain_copy(model).eval(), {"folded": False, "map_entries": 0}
    costs = preprocess_costs(model)
    folded = costs.pop("fold")
    result = fold_preprocess(model) if folded else plain_copy(model).eval()
    return result, {"folded": folded, **costs}


def deployed_size(model: MLP) -> dict:
    """What inference computes with: nonzero Linear weights, the kept map, MACs per image."""
    weights = sum(int(effective_weight(lin).count_nonzero()) for lin in model.linears())
    map_entries = model.preprocess.matrix.numel() if model.spec.preprocess else 0
    return {
        "weights_nonzero": weights,
        "preprocess_map_entries": map_entries,
        "macs_per_image": weights + map_entries,  # the map is a dense MatMul
    }


def max_logit_diff(a: nn.Module, b: nn.Module, x: np.ndarray) -> float:
    """max |logits_a - logits_b| over the rows of x (both in eval mode)."""
    return float(np.abs(predict_logits(a, x) - predict_logits(b, x)).max())


def layer_summary(model: MLP) -> list[dict]:
    """Per Linear layer: shape, weights, non-zero weights, sparsity."""
    rows = []
    names = [f"blocks.{i}.linear" for i in range(len(model.blocks))] + ["head"]
    for name, linear in zip(names, model.linears(), strict=True):
        W = effective_weight(linear)
        nonzero = int(W.count_nonzero())
        rows.append(
            {
                "layer": name,
                "shape": list(W.shape),
                "weights": W.numel(),
                "nonzero": nonzero,
                "sparsity": 1 - nonzero / W.numel(),
            }
        )
    return rows


def model_summary(model: MLP) -> dict:
    """Global sparsity, parameters total / non-zero, FLOPs per sample (dense and non-zero).

    FLOPs count a multiply and an add per weight, plus the preprocessing matmul when it is
    still in front and a multiply-add per BatchNorm unit; activations are not counted.
    """
    plain = plain_copy(model)
    layers = layer_summary(plain)
    weights = sum(row["weights"] for row in layers)
    nonzero = sum(row["nonzero"] for row in layers)
    params = list(plain.parameters())
    extra = 0
    if plain.spec.preprocess:
        extra += 2 * plain.preprocess.matrix.numel() + PIXELS
    extra += sum(2 * b.norm.num_features for b in plain.blocks if hasattr(b.norm, "running_var"))
    return {
        "sparsity": 1 - nonzero / weights,
        "hidden": list(plain.spec.hidden),
        "params_total": sum(p.numel() for p in params),
        "params_nonzero": sum(int(p.count_nonzero()) for p in params),
        "flops_per_sample": 2 * weights + extra,
        "flops_per_sample_nonzero": 2 * nonzero + extra,
        "layers": layers,
    }


def has_batchnorm(model: nn.Module) -> bool:
    """Whether any BatchNorm module remains."""
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
