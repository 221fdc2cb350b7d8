"""The report's figures of the evaluation: confusion, calibration, learning curve, worst errors,
the robustness sets' example images, and the size–accuracy frontier.

Draws what evaluate, learning-curve and robustness wrote (reports/evaluate/detail.json,
reports/learning_curve.json, reports/robustness/examples.json), and what bench/frontier.py
wrote (reports/frontier.json), once the report stage has read it. Pure functions returning
matplotlib Figures; no torch, reads and writes no files.
"""

from __future__ import annotations

import base64
import io
from typing import Any

import numpy as np
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure  # no pyplot: no GUI backend, no global figure state
from matplotlib.ticker import NullLocator
from PIL import Image

from digits.contract import SIDE

STYLES = {"dense": "o-", "compressed": "x--"}


def percent(value: float) -> str:
    """A share as a percentage with two decimals."""
    return f"{100 * value:.2f}%"


def plot_confusion(details: dict[str, Any]) -> Figure:
    """Test confusion matrix of each model, counts on a log colour scale so errors show."""
    fig = Figure(figsize=(5.5 * len(details), 5), layout="constrained")
    axes = fig.subplots(1, len(details), squeeze=False)[0]
    for ax, (name, detail) in zip(axes, details.items(), strict=True):
        C = np.asarray(detail["test"]["confusion"])  # (10, 10) rows actual
        ax.imshow(C, cmap="Blues", norm=LogNorm(vmin=1, vmax=max(C.max(), 2)))
        for actual, predicted in zip(*np.nonzero(C), strict=True):
            color = "white" if actual == predicted else "black"
            count = str(C[actual, predicted])
            ax.text(predicted, actual, count, ha="center", va="center", fontsize=7, color=color)
        ax.set(xticks=range(10), yticks=range(10), xlabel="predicted", ylabel="actual")
        ax.set_title(f"{name}: test confusion matrix")
    return fig


def plot_reliability(details: dict[str, Any]) -> Figure:
    """Reliability diagram (accuracy vs confidence per bin) over a histogram of confidences."""
    fig = Figure(figsize=(6.5, 7), layout="constrained")
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=(2, 1))
    top.plot([0, 1], [0, 1], ":", color="grey", label="perfectly calibrated")
    for name, detail in details.items():
        curve, ece = detail["test"]["reliability"], detail["test"]["ece"]
        seen = [i for i, n in enumerate(curve["count"]) if n]
        confidence = [curve["confidence"][i] for i in seen]
        accuracy = [curve["accuracy"][i] for i in seen]
        style = STYLES[name]  # the two models' lines can coincide: markers tell them apart
        top.plot(confidence, accuracy, style, label=f"{name}, ECE {ece:.4f}")
        bottom.plot(confidence, [curve["count"][i] for i in seen], style, label=name)
    top.set(ylabel="accuracy in bin", title="Calibration on test", xlim=(0, 1.02), ylim=(0, 1.02))
    top.legend()
    bottom.set(xlabel="mean confidence in bin", ylabel="test images", yscale="log")
    return fig


def plot_learning_curve(
    rows: list[dict[str, Any]], bayes_error: float, dense: dict[str, float]
) -> Figure:
    """Train and dev error against training-set size, the Bayes proxy and the dense model."""
    fig = Figure(figsize=(6.5, 4.5), layout="constrained")
    ax = fig.subplots()
    sizes = [row["train_size"] for row in rows]
    ax.plot(sizes, [row["train_error"] for row in rows], "o-", color="C0", label="train error")
    ax.plot(sizes, [row["dev_error"] for row in rows], "o-", color="C1", label="dev error")
    # The stage's own model saw the full split for longer: where the curve heads with training.
    for split, color in (("train", "C0"), ("dev", "C1")):
        label = f"dense model, {split}"
        ax.plot(sizes[-1], dense[f"{split}_error"], "*", color=color, markersize=12, label=label)
    ax.axhline(bayes_error, ls=":", color="grey", label="Bayes-error proxy")
    ax.set(xscale="log", xlabel="training images", ylabel="error", title="Learning curve")
    ax.set_xticks(sizes, [f"{size:,}" for size in sizes], minor=False)
    ax.xaxis.set_minor_locator(NullLocator())  # label the measured sizes only
    ax.yaxis.set_major_formatter(lambda v, _: f"{100 * v:.1f}%")
    ax.legend()
    return fig


# Published pruned MLPs on MNIST (nonzero weights, test accuracy), for the frontier figure.
PUBLISHED = (
    ("Han et al. 2015, LeNet-300-100", 22_000, 0.9841),
    ("Molchanov et al. 2017, sparse VD", 3_900, 0.9808),
)


def plot_frontier(frontier: dict[str, Any], deployed: tuple[int, float] | None) -> Figure:
    """Test accuracy against nonzero weights, mean ± std over seeds, one line per method."""
    fig = Figure(figsize=(6.5, 4.5), layout="constrained")
    ax = fig.subplots()
    for k, method in enumerate(frontier["methods"]):
        rows = sorted(
            (r for r in frontier["rows"] if r["method"] == method), key=lambda r: r["nonzero"]
        )
        ax.errorbar(
            [r["nonzero"] for r in rows],
            [r["test"] for r in rows],
            yerr=[r["test_std"] for r in rows],
            fmt="o-",
            color=f"C{k}",
            capsize=3,
            label=f"{method} (test, seeds {', '.join(map(str, frontier['seeds']))})",
        )
    for k, (name, nonzero, accuracy) in enumerate(PUBLISHED):
        ax.plot(nonzero, accuracy, "s", color="grey", alpha=0.4 + 0.3 * k, label=name)
    if deployed is not None:
        ax.plot(*deployed, "*", color="C3", markersize=12, label="this run's deployed model")
    ax.set(xscale="log", xlabel="nonzero weights in the ONNX graph", ylabel="test accuracy")
    sizes = sorted({round(row["nonzero"]) for row in frontier["rows"]})
    ax.set_xticks(sizes, [f"{size:,}" for size in sizes], minor=False)
    ax.xaxis.set_minor_locator(NullLocator())  # label the measured sizes only
    ax.set_title("Size against accuracy")
    ax.yaxis.set_major_formatter(lambda v, _: f"{100 * v:.1f}%")
    ax.legend(fontsize="small")
    return fig


def plot_worst_errors(errors: list[dict[str, Any]], images: np.ndarray, columns: int = 5) -> Figure:
    """The most confidently wrong test images, titled `label -> predicted (confidence)`."""
    rows = max(1, -(-len(errors) // columns))
    fig = Figure(figsize=(1.8 * columns, 2.0 * rows), layout="constrained")
    axes = fig.subplots(rows, columns, squeeze=False).ravel()
    for ax in axes:
        ax.axis("off")
    for ax, error in zip(axes, errors, strict=False):
        ax.imshow(images[error["index"]].reshape(SIDE, SIDE), cmap="gray_r", vmin=0, vmax=255)
        title = f"{error['label']} → {error['predicted']} ({percent(error['confidence'])})"
        ax.set_title(title, fontsize=9)
    fig.suptitle("Most confidently wrong test images: true → predicted (confidence)")
    return fig


def plot_robustness(examples: list[dict[str, Any]], sets_per_row: int = 6) -> Figure:
    """Example images of each robustness set as written to file, titled `label → answer`."""
    names = list(dict.fromkeys(example["set"] for example in examples))
    per_set = max(sum(e["set"] == name for e in examples) for name in names)
    bands = -(-len(names) // sets_per_row)
    fig = Figure(figsize=(1.7 * sets_per_row, 1.75 * bands * per_set), layout="constrained")
    axes = fig.subplots(bands * per_set, sets_per_row, squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for k, name in enumerate(names):
        band, column = divmod(k, sets_per_row)
        shown = [e for e in examples if e["set"] == name]
        for row, example in enumerate(shown):
            ax = axes[band * per_set + row, column]
            image = Image.open(io.BytesIO(base64.b64decode(example["png"]))).convert("L")
            ax.imshow(np.asarray(image), cmap="gray", vmin=0, vmax=255)
            mark = "" if example["answer"] == example["label"] else " ✗"
            title = f"{name}\n{example['label']} → {example['answer']}{mark}"
            ax.set_title(title, fontsize=8, color="black" if not mark else "red")
    fig.suptitle("Robustness sets as image files: true → answer of the deployed model")
    return fig
