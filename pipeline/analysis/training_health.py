"""What training does inside the network, measured once per epoch, and a verdict on it.

Per Linear layer: the gradient norm of the loss on one fixed dev batch, the update-to-weight
ratio over the epoch and a weight histogram; per hidden layer: the activations' mean and std,
the share of dead ReLU units (never active on the batch) and of saturated sigmoid/tanh outputs.
`verdict` names vanishing or exploding gradients, dead units and saturation with the numbers
behind them, and a remedy. Measuring draws no random numbers and changes no weight or batchnorm
statistic, so a run with diagnostics trains exactly as one without. Reads and writes no files.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.utils import prune

from pipeline.config import require
from pipeline.model.network import MLP

# The activations whose units can die (zero output and zero gradient for every input seen).
DYING = ("relu", "noisy_relu")
# Output within this share of the output range from an asymptote counts as saturated:
# sigmoid outside [0.03, 0.97], tanh outside [-0.94, 0.94] (the same points of the curve).
SATURATION_MARGIN = 0.03
SATURATING = {"sigmoid": (0.0, 1.0), "tanh": (-1.0, 1.0)}
REMEDIES = {
    "vanishing gradients": [
        "batchnorm (model.batchnorm: true)",
        "He init with ReLU (model.init: he_normal, model.activation: relu)",
        "residual connections (model.residual: true)",
    ],
    "exploding gradients": [
        "a lower learning rate (train.lr)",
        "gradient clipping (train.clip_norm)",
        "a smaller init (model.init: he_normal, model.init_gain: 1)",
        "batchnorm (model.batchnorm: true)",
    ],
    "dead units": [
        "a lower learning rate (train.lr)",
        "He init and zero biases (model.init: he_normal, model.init_bias: 0)",
        "batchnorm (model.batchnorm: true), or leaky_relu / elu (model.activation)",
    ],
    "saturation": [
        "batchnorm (model.batchnorm: true)",
        "Xavier init (model.init: xavier_normal) and standardized inputs (data.scaling)",
        "a non-saturating activation (model.activation: relu)",
    ],
}


@dataclass(frozen=True)
class DiagnosticsParams:
    """params.yaml `diagnostics:` group: the dev batch and the verdict's thresholds."""

    batch: int = 512  # dev images the per-epoch measurements use (the first ones, always the same)
    bins: int = 30  # weight histogram bins
    vanishing_ratio: float = 1e-3  # first / last layer gradient norm below this: vanishing
    exploding_norm: float = 1e3  # any layer's gradient norm above this (or not finite): exploding
    dead_fraction: float = 0.25  # share of ReLU units dead on the batch above this: dead units
    saturated_fraction: float = 0.5  # share of sigmoid/tanh outputs saturated above this

    def __post_init__(self) -> None:
        require(self.batch >= 1, "diagnostics.batch", "must be >= 1")
        require(self.bins >= 1, "diagnostics.bins", "must be >= 1")
        require(0 < self.vanishing_ratio < 1, "diagnostics.vanishing_ratio", "must be in (0, 1)")
        require(self.exploding_norm > 0, "diagnostics.exploding_norm", "must be > 0")
        require(0 <= self.dead_fraction < 1, "diagnostics.dead_fraction", "must be in [0, 1)")
        require(
            0 <= self.saturated_fraction < 1, "diagnostics.saturated_fraction", "must be in [0, 1)"
        )


def layer_names(model: MLP) -> list[str]:
    """Names of the Linear layers in order: blocks.0 ... and head."""
    return [f"blocks.{i}" for i in range(len(model.blocks))] + ["head"]


def learned_weight(linear: nn.Linear) -> torch.Tensor:
    """The leaf tensor the optimizer updates (weight_orig under a pruning mask)."""
    return linear.weight_orig if prune.is_pruned(linear) else linear.weight


def weights_snapshot(model: MLP) -> list[torch.Tensor]:
    """Copies of every Linear's learned weight, for the update ratio at the epoch's end."""
    return [learned_weight(linear).detach().clone() for linear in model.linears()]


def capture_activations(model: MLP) -> tuple[list[tuple[torch.Tensor, torch.Tensor]], list]:
    """Forward hooks that record each hidden activation's (input, output); and the handles."""
    seen: list[tuple[torch.Tensor, torch.Tensor]] = []

    def record(module: nn.Module, inputs: tuple[torch.Tensor], output: torch.Tensor) -> None:
        seen.append((inputs[0].detach(), output.detach()))

    return seen, [block.act.register_forward_hook(record) for block in model.blocks]


def activation_figures(activation: str, pre: torch.Tensor, post: torch.Tensor) -> dict:
    """Mean and std of a layer's outputs; its dead-unit or saturated share where that applies."""
    figures: dict[str, float | None] = {
        "act_mean": post.mean().item(),
        "act_std": post.std().item(),
        "dead": None,
        "saturated": None,
    }
    if activation in DYING:
        figures["dead"] = (pre <= 0).all(dim=0).float().mean().item()  # (N, units) -> share
    if activation in SATURATING:
        low, high = SATURATING[activation]
        margin = SATURATION_MARGIN * (high - low)
        figures["saturated"] = (
            ((post < low + margin) | (post > high - margin)).float().mean().item()
        )
    return figures


def histogram(W: torch.Tensor, bins: int) -> dict:
    """Counts of the weights over `bins` equal bins spanning ±max|w|."""
    values = W.detach().flatten().double().numpy()
    finite = values[np.isfinite(values)]
    edge = float(np.abs(finite).max()) if finite.size else 0.0
    counts, edges = np.histogram(finite, bins=bins, range=(-edge, edge) if edge else (-1, 1))
    return {"edges": edges.tolist(), "counts": counts.tolist()}


def measure(
    model: MLP, batch: tuple[torch.Tensor, torch.Tensor], before: list[torch.Tensor], bins: int
) -> dict[str, dict]:
    """Per layer: gradient norm on the batch (eval mode), update ratio since `before`, histogram."""
    was_training = model.training
    model.eval()  # no dropout, no noise, batchnorm statistics left as they are
    seen, handles = capture_activations(model)
    try:
        x, y = batch
        loss = nn.functional.cross_entropy(model(x), y)
        leaves = [learned_weight(linear) for linear in model.linears()]
        grads = torch.autograd.grad(loss, leaves, allow_unused=True)  # leaves .grad untouched
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    layers = {}
    for i, (name, W, grad) in enumerate(zip(layer_names(model), leaves, grads, strict=True)):
        weight_norm = W.detach().norm().item()
        update = (W.detach() - before[i]).norm().item()
        layers[name] = {
            "grad_norm": grad.norm().item() if grad is not None else 0.0,
            "weight_norm": weight_norm,
            "update_ratio": update / weight_norm if weight_norm else math.inf,
            "histogram": histogram(W, bins),
        }
        if i < len(seen):
            layers[name].update(activation_figures(model.spec.activation, *seen[i]))
    return {"loss": loss.item(), "layers": layers}


def make_probe(
    dev: tuple[np.ndarray, np.ndarray], params: DiagnosticsParams
) -> Callable[[MLP], Callable[[], dict]]:
    """`fit`'s per-epoch probe: weights kept as the epoch starts, `measure` as it ends."""
    x = torch.from_numpy(np.asarray(dev[0][: params.batch], dtype=np.float32))  # (B, 784)
    y = torch.from_numpy(np.asarray(dev[1][: params.batch], dtype=np.int64))

    def start(model: MLP) -> Callable[[], dict]:
        before = weights_snapshot(model)
        return lambda: measure(model, (x, y), before, params.bins)

    return start


def scalar_figures(diagnostics: dict) -> dict[str, float]:
    """The per-layer numbers of one epoch as flat `layer/figure` keys (no histograms, no None)."""
    flat = {}
    for layer, figures in diagnostics["layers"].items():
        for key, value in figures.items():
            if key != "histogram" and value is not None:
                flat[f"{layer}/{key}"] = value
    return flat


def find_exploding(epochs: list[dict], params: DiagnosticsParams) -> dict | None:
    """The first epoch whose loss or a gradient norm is not finite or above the limit."""
    for row in epochs:
        norms = {name: f["grad_norm"] for name, f in row["diagnostics"]["layers"].items()}
        worst = max(norms, key=lambda name: norms[name] if math.isfinite(norms[name]) else math.inf)
        loss, norm = row["diagnostics"]["loss"], norms[worst]
        if not (math.isfinite(loss) and math.isfinite(norm)) or norm > params.exploding_norm:
            return {
                "epoch": row["epoch"],
                "layer": worst,
                "grad_norm": norms[worst],
                "loss": loss,
                "limit": params.exploding_norm,
                "evidence": f"epoch {row['epoch']}: {worst} gradient norm {norms[worst]:.3g} "
                f"(limit {params.exploding_norm:.3g}), dev-batch loss {loss:.3g}",
            }
    return None


def find_vanishing(epochs: list[dict], params: DiagnosticsParams) -> dict | None:
    """First-layer / last-layer gradient norm, median over epochs, when below the ratio."""
    ratios, first_norms, last_norms = [], [], []
    for row in epochs:
        norms = [f["grad_norm"] for f in row["diagnostics"]["layers"].values()]
        first_norms.append(norms[0])
        last_norms.append(norms[-1])
        ratios.append(norms[0] / norms[-1] if norms[-1] else math.inf)
    ratio = float(np.median(ratios))
    if len(norms) < 2 or not ratio < params.vanishing_ratio:
        return None
    return {
        "ratio": ratio,
        "first_grad_norm": float(np.median(first_norms)),
        "last_grad_norm": float(np.median(last_norms)),
        "limit": params.vanishing_ratio,
        "evidence": f"first layer's gradient norm is {ratio:.2g} × the last layer's "
        f"(median over epochs; limit {params.vanishing_ratio:.0e})",
    }


def find_share(last: dict, key: str, limit: float, what: str) -> dict | None:
    """The hidden layers' mean share of `key` (dead, saturated) in the last epoch, above limit."""
    shares = {
        name: figures[key]
        for name, figures in last["diagnostics"]["layers"].items()
        if figures.get(key) is not None
    }
    if not shares:
        return None
    share = float(np.mean(list(shares.values())))
    if not share > limit:
        return None
    per_layer = ", ".join(f"{name} {value:.0%}" for name, value in shares.items())
    return {
        "share": share,
        "per_layer": shares,
        "limit": limit,
        "evidence": f"{share:.0%} {what} on the dev batch at the last epoch "
        f"({per_layer}; limit {limit:.0%})",
    }


def verdict(history: list[dict], params: DiagnosticsParams) -> dict[str, Any]:
    """What went wrong in a run, from its per-epoch diagnostics: findings, numbers, remedies."""
    epochs = [row for row in history if "diagnostics" in row]
    if not epochs:
        return {"verdict": "not measured", "findings": {}}
    findings = {
        "exploding gradients": find_exploding(epochs, params),
        "vanishing gradients": find_vanishing(epochs, params),
        "dead units": find_share(epochs[-1], "dead", params.dead_fraction, "of ReLU units dead"),
        "saturation": find_share(
            epochs[-1], "saturated", params.saturated_fraction, "of sigmoid/tanh outputs saturated"
        ),
    }
    found = {name: {**f, "remedy": REMEDIES[name]} for name, f in findings.items() if f}
    return {"verdict": ", ".join(found) or "healthy", "findings": found}
