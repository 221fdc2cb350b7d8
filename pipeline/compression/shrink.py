"""Structured pruning: whole hidden units removed, giving a narrower MLP.

Units are scored by |BN scale|·‖w_in‖·‖w_out‖; layers joined by skip connections keep the same
units. The result is a new, smaller network whose NetSpec says so, so it saves and reloads
through the usual checkpoint. Reads and writes no files.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn
from torch.nn.utils import prune

from pipeline.compression.pruning import effective_weight
from pipeline.model.network import MLP


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
