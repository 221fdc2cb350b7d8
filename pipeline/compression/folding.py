"""Folds that keep what the network computes: batchnorm, and the fixed preprocessing map.

BatchNorm goes into the Linear before it (torch.nn.utils.fusion); the preprocessing map into
the first Linear, or only its pixel mixing, or not at all where keeping it is smaller. Each
returns a new, simpler network whose NetSpec says so (no BN, no preprocessing), so it
saves and reloads through the usual checkpoint; `max_logit_diff` measures that nothing
changed. Reads and writes no files.
"""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import torch
from torch import nn
from torch.nn.utils.fusion import fuse_linear_bn_eval

from digits.contract import PIXELS
from pipeline.compression.pruning import effective_weight, plain_copy
from pipeline.model.network import MLP, predict_logits


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


def max_logit_diff(a: nn.Module, b: nn.Module, x: np.ndarray) -> float:
    """max |logits_a - logits_b| over the rows of x (both in eval mode)."""
    return float(np.abs(predict_logits(a, x) - predict_logits(b, x)).max())


def has_batchnorm(model: nn.Module) -> bool:
    """Whether any BatchNorm module remains."""
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
