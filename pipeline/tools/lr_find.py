"""`digits lr-find`: an exponential learning-rate sweep over one pass of the train split.

Reads: data/prepared/{train,dev}.npz, transform.npz, params.yaml `base`, `model`, `train`
(optimizer, batch size, loss). Writes: reports/lr_find.json (lr, smoothed loss, suggestion) and
reports/lr_find.png. The suggestion is the lr of the lowest smoothed loss divided by 10, the usual
rule: the minimum itself already sits at the edge of divergence.
Run: `digits lr-find [--min-lr 1e-6] [--max-lr 1] [--steps N]` (default: one full pass)
"""

from __future__ import annotations

import math
from pathlib import Path

import click
import numpy as np
import torch

from digits.atomic import atomic_path, write_json
from pipeline.config import BaseParams, begin_stage, load_group
from pipeline.model.network import MLP, ModelParams, build_mlp
from pipeline.options import params_option, path_option, prepared_option
from pipeline.training.loop import Data, data_loss, load_data
from pipeline.training.optim import make_optimizer
from pipeline.training.params import TrainParams

SMOOTHING = 0.98  # EMA factor of the loss curve
DIVERGED = 4.0  # stop once the smoothed loss exceeds this multiple of its minimum


def lr_sweep(
    model: MLP, train: Data, params: TrainParams, min_lr: float, max_lr: float, steps: int | None,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """(lrs, smoothed losses) of one pass with the lr growing geometrically; stops on divergence."""
    gen = torch.Generator().manual_seed(seed)
    x, y = torch.from_numpy(train[0]), torch.from_numpy(np.asarray(train[1], dtype=np.int64))
    steps = min(steps or len(y), len(y) // params.batch_size)  # at most one pass
    order = torch.randperm(len(y), generator=gen)[: steps * params.batch_size]
    optimizer = make_optimizer(model.parameters(), params)
    for group in optimizer.param_groups:
        group["lr"] = min_lr
    gamma = (max_lr / min_lr) ** (1 / max(steps - 1, 1))
    scheduler = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma)
    lrs, losses, average = [], [], 0.0
    model.train()
    for step, idx in enumerate(order.view(steps, params.batch_size)):
        loss = data_loss(model(x[idx].float()), y[idx], params)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
        average = SMOOTHING * average + (1 - SMOOTHING) * loss.item()
        losses.append(average / (1 - SMOOTHING ** (step + 1)))  # bias-corrected EMA
        if not math.isfinite(losses[-1]) or losses[-1] > DIVERGED * min(losses):
            break
    return np.array(lrs), np.array(losses)


def suggest_lr(lrs: np.ndarray, losses: np.ndarray) -> float:
    """A tenth of the lr at the lowest smoothed loss."""
    return float(lrs[int(np.nanargmin(losses))] / 10)


def plot_sweep(path: Path, lrs: np.ndarray, losses: np.ndarray, suggestion: float) -> None:
    """Write the loss-vs-lr curve (log x) with the suggestion marked, atomically."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.semilogx(lrs, losses)
    ax.axvline(suggestion, color="tab:red", linestyle="--", label=f"suggested {suggestion:.2e}")
    ax.set(xlabel="learning rate", ylabel="smoothed training loss", title="lr-find")
    ax.legend()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)


@click.command("lr-find")
@params_option
@prepared_option(must_exist=False)
@path_option(
    "--out",
    default="reports/lr_find.json",
    help="JSON to write; the PNG goes beside it.",
    dir_okay=False,
)
@click.option("--min-lr", default=1e-6, show_default=True, help="First learning rate.")
@click.option("--max-lr", default=1.0, show_default=True, help="Last learning rate.")
@click.option(
    "--steps", type=int, default=None, help="Batches in the sweep (default and at most: one pass)."
)
def lr_find_command(
    params_file: Path, prepared: Path, out: Path, min_lr: float, max_lr: float, steps: int | None
) -> None:
    """Sweep the learning rate exponentially over one pass; write the curve and suggest a rate."""
    if not 0 < min_lr < max_lr:
        raise click.BadParameter("need 0 < --min-lr < --max-lr", param_hint="--min-lr")
    if steps is not None and steps < 2:
        raise click.BadParameter("must be >= 2", param_hint="--steps")
    base = load_group(BaseParams, "base", params_file)
    params = load_group(TrainParams, "train", params_file)
    begin_stage(base)
    train, _, transform = load_data(prepared)
    if len(train[1]) < 2 * params.batch_size:  # the sweep needs two batches to draw a curve
        raise click.ClickException(
            f"params: train.batch_size {params.batch_size} is too large for lr-find: "
            f"{prepared / 'train.npz'} has {len(train[1])} rows, fewer than two batches"
        )
    model = build_mlp(load_group(ModelParams, "model", params_file), transform)
    lrs, losses = lr_sweep(model, train, params, min_lr, max_lr, steps, seed=base.seed)
    suggestion = suggest_lr(lrs, losses)
    write_json(out, {"lr": lrs.tolist(), "loss": losses.tolist(), "suggested_lr": suggestion})
    plot_sweep(out.with_suffix(".png"), lrs, losses, suggestion)
    click.echo(f"swept {len(lrs)} batches; suggested lr {suggestion:.2e} -> {out}")
