"""Unstructured pruning of an MLP: torch.nn.utils.prune masks by magnitude or importance.

Pure functions on `pipeline.model.network.MLP`. Masks stay fixed while fine-tuning; per-layer
(L1), global and importance-weighted (|w| times input scale) pruning, the layer sensitivity
scan and the sparsity allocation it feeds, and the helpers every other compression module uses
to read a masked layer (`effective_weight`, `plain_copy`). Reads and writes no files.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import numpy as np
import torch
from torch import nn
from torch.nn.utils import prune

from pipeline.model.network import MLP

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
