"""The report's view inside the trained network: diagnostics over epochs, weights, hidden codes.

Draws what the train stage wrote to reports/train/ (diagnostics.json, pictures.json) and words
the verdict of reports/train.json. Pure functions returning matplotlib Figures and Markdown
lines; no torch, reads and writes no files (the report stage does).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

DIAGNOSTIC_FIGURES = (
    "gradients.png",
    "activations.png",
    "weight_histograms.png",
    "first_layer.png",
    "hidden_pca.png",
)


def layer_series(epochs: list[dict], key: str) -> dict[str, list[float | None]]:
    """Per layer, one figure (`key`) per epoch; None where the layer lacks it."""
    layers = list(epochs[0]["layers"])
    return {name: [row["layers"][name].get(key) for row in epochs] for name in layers}


def plot_gradients(epochs: list[dict]) -> Figure:
    """Gradient norm and update-to-weight ratio per layer over epochs, log scale."""
    fig = Figure(figsize=(11, 4.5), layout="constrained")
    axes = fig.subplots(1, 2)
    x = [row["epoch"] for row in epochs]
    titles = {"grad_norm": "gradient norm (dev batch)", "update_ratio": "‖ΔW‖ / ‖W‖ per epoch"}
    for ax, (key, title) in zip(axes, titles.items(), strict=True):
        for name, values in layer_series(epochs, key).items():
            ax.plot(x, [np.nan if v is None else v for v in values], "o-", label=name)
        ax.set(xlabel="epoch", yscale="log", title=title)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes[0].legend(fontsize=8)
    return fig


def plot_activations(epochs: list[dict]) -> Figure:
    """Hidden activations' mean ± std, and dead or saturated shares, per layer over epochs."""
    fig = Figure(figsize=(11, 4.5), layout="constrained")
    left, right = fig.subplots(1, 2)
    x = np.array([row["epoch"] for row in epochs])
    means, stds = layer_series(epochs, "act_mean"), layer_series(epochs, "act_std")
    for name in [n for n, values in means.items() if values[0] is not None]:
        mean, std = np.array(means[name], float), np.array(stds[name], float)
        left.plot(x, mean, "o-", label=name)
        left.fill_between(x, mean - std, mean + std, alpha=0.15)
    left.set(xlabel="epoch", title="hidden activations: mean ± std")
    left.legend(fontsize=8)
    for key, style in (("dead", "o-"), ("saturated", "x--")):
        for name, values in layer_series(epochs, key).items():
            if values[0] is not None:
                right.plot(x, values, style, label=f"{name} {key}")
    right.set(xlabel="epoch", ylim=(-0.02, 1.02), title="dead ReLU units / saturated outputs")
    right.yaxis.set_major_formatter(lambda v, _: f"{100 * v:.0f}%")
    for ax in (left, right):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if right.lines:
        right.legend(fontsize=8)
    return fig


def plot_weight_histograms(epochs: list[dict], columns: int = 4) -> Figure:
    """Each layer's weight histogram at the first, middle and last epoch."""
    layers = list(epochs[0]["layers"])
    picks = sorted({0, len(epochs) // 2, len(epochs) - 1})
    rows, columns = -(-len(layers) // columns), min(columns, len(layers))
    fig = Figure(figsize=(3.2 * columns, 3.0 * rows), layout="constrained")
    axes = fig.subplots(rows, columns, squeeze=False).ravel()
    for ax in axes[len(layers) :]:
        ax.axis("off")
    for ax, name in zip(axes, layers, strict=False):
        for i in picks:
            hist = epochs[i]["layers"][name]["histogram"]
            edges = np.array(hist["edges"])
            ax.stairs(hist["counts"], edges, label=f"epoch {epochs[i]['epoch']}")
        ax.set(title=name, xlabel="weight")
    axes[0].set_ylabel("weights")
    axes[0].legend(fontsize=8)
    return fig


def plot_first_layer(pictures: dict[str, Any], columns: int = 8) -> Figure:
    """The first layer's strongest units as 28×28 images (red +, blue −, each scaled alone)."""
    images = np.array(pictures["first_layer"])  # (units, 28, 28)
    rows = max(1, -(-len(images) // columns))
    fig = Figure(figsize=(1.4 * columns, 1.4 * rows + 0.4), layout="constrained")
    axes = fig.subplots(rows, columns, squeeze=False).ravel()
    for ax in axes:
        ax.axis("off")
    for ax, image in zip(axes, images, strict=False):
        scale = max(float(np.abs(image).max()), 1e-12)
        ax.imshow(image, cmap="RdBu_r", vmin=-scale, vmax=scale)
    fig.suptitle("First-layer weights in pixel space (the units with the largest norm)")
    return fig


def plot_hidden_pca(pictures: dict[str, Any]) -> Figure:
    """Dev images' last hidden layer projected on its first two principal components."""
    coords, labels = np.array(pictures["pca"]), np.array(pictures["pca_labels"])
    variance = pictures["pca_variance"]
    fig = Figure(figsize=(6.5, 5.5), layout="constrained")
    ax = fig.subplots()
    for digit in range(10):
        points = coords[labels == digit]
        ax.scatter(points[:, 0], points[:, 1], s=4, color=f"C{digit}", label=str(digit))
    ax.set(
        xlabel=f"PC 1 ({variance[0]:.0%} of the variance)",
        ylabel=f"PC 2 ({variance[1]:.0%})",
        title=f"Last hidden layer of {len(labels):,} dev images, PCA",
    )
    ax.legend(markerscale=4, fontsize=8, title="digit")
    return fig


def diagnostics_section(trained: dict[str, Any] | None) -> list[str]:
    """Markdown: the verdict with its numbers and remedies, then the figures."""
    if trained is None:
        return ["Not computed: run `digits train` (or `dvc repro train`)."]
    diagnosis = trained["train"].get("diagnosis", {"verdict": "not measured", "findings": {}})
    lines = [f"Training diagnostics verdict: **{diagnosis['verdict']}**."]
    for name, finding in diagnosis["findings"].items():
        lines += ["", f"- **{name}**: {finding['evidence']}. Try: {'; '.join(finding['remedy'])}."]
    lines += [
        "",
        "Measured after every epoch on the same dev batch, in eval mode (thresholds: params "
        "`diagnostics`). A first layer whose gradient is orders of magnitude below the last's "
        "barely learns; a dead ReLU unit passes no gradient; a saturated sigmoid/tanh output "
        "passes almost none.",
        "",
        "![gradients](figures/gradients.png)",
        "",
        "![activations](figures/activations.png)",
        "",
        "![weight histograms](figures/weight_histograms.png)",
        "",
        "![first-layer weights](figures/first_layer.png)",
        "",
        "![hidden representations](figures/hidden_pca.png)",
    ]
    return lines
