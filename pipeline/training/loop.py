"""The training loop the stages share: the epoch loop, its loss, resume state, evaluation, data.

`fit` is the one training loop: `digits train` runs it once, compress runs it for every
fine-tune, learning-curve for every subset. Its params are pipeline.training.params.TrainParams;
optimizers and schedules come from pipeline.training.optim.
Reads and writes nothing itself except the resume file `fit` is given.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import click
import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils import prune
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from digits.atomic import atomic_path
from digits.contract import SIDE
from digits.npz import read_split
from pipeline.analysis import classification
from pipeline.model.network import MLP, predict_logits, read_torch_file
from pipeline.model.transform import AffineTransform
from pipeline.training.augment import add_noise, blur_some, elastic_distort, vary_strokes
from pipeline.training.optim import make_optimizer, make_scheduler
from pipeline.training.params import TrainParams
from pipeline.training.styles import low_resolution, writer_styles

Data = tuple[np.ndarray, np.ndarray]
# Called with the model as each epoch starts; the function it returns is called as the epoch
# ends, and its dict goes into the epoch's history row under "diagnostics"
# (pipeline.analysis.training_health.make_probe). Rows are saved in the resume state with the rest.
Probe = Callable[[MLP], Callable[[], dict]]
TorchOptimizer = torch.optim.Optimizer
Scheduler = torch.optim.lr_scheduler.LRScheduler


def data_loss(logits: torch.Tensor, y: torch.Tensor, params: TrainParams) -> torch.Tensor:
    """Mean loss of a batch: softmax cross-entropy (with smoothing) or MSE on one-hot."""
    if params.loss == "mse":
        target = F.one_hot(y, logits.shape[1]).to(logits.dtype)
        return F.mse_loss(logits.softmax(dim=1), target)
    return F.cross_entropy(logits, y, label_smoothing=params.label_smoothing)


def penalty(model: MLP, l1: float, l2: float = 0.0) -> torch.Tensor:
    """l1 * sum |W| + l2/2 * sum W^2 over every Linear weight (biases and BN excluded)."""
    total = torch.zeros((), dtype=model.head.weight.dtype)
    for linear in model.linears():
        W = linear.weight  # the masked weight when pruned: penalise what the layer uses
        if l1:
            total = total + l1 * W.abs().sum()
        if l2:
            total = total + 0.5 * l2 * W.pow(2).sum()
    return total


@torch.no_grad()
def apply_max_norm(model: MLP, max_norm: float) -> None:
    """Scale down each hidden unit's incoming weights to L2 norm <= max_norm (Srivastava 2014).

    A projection after each step, not a reparametrization: weights inside the ball train as
    they would unconstrained. Under a pruning mask the norm is that of the weights in use.
    """
    for block in model.blocks:
        linear = block.linear
        W = linear.weight_orig if prune.is_pruned(linear) else linear.weight  # (units, fan_in)
        used = W * linear.weight_mask if prune.is_pruned(linear) else W
        norms = used.norm(dim=1, keepdim=True)  # (units, 1)
        W.mul_((max_norm / norms.clamp_min(1e-12)).clamp(max=1.0))


def augment_batch(
    x: torch.Tensor, y: torch.Tensor, params: TrainParams, gen: torch.Generator
) -> torch.Tensor:
    """Writer styles by label, a random small rotation, shift and scale of each image, then
    robustness_augment: (N, 784)."""
    n = x.shape[0]
    if params.augment_styles:
        x = writer_styles(x, y, params.augment_styles, gen)
    angle = (torch.rand(n, generator=gen) * 2 - 1) * np.deg2rad(params.augment_degrees)
    scale = 1 + (torch.rand(n, generator=gen) * 2 - 1) * params.augment_scale
    shift = (torch.rand(n, 2, generator=gen) * 2 - 1) * params.augment_shift * 2 / SIDE
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack(
        [torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1
    )
    grid = F.affine_grid(theta, (n, 1, SIDE, SIDE), align_corners=False)  # (N, 28, 28, 2)
    images = F.grid_sample(x.view(n, 1, SIDE, SIDE), grid, align_corners=False)
    return robustness_augment(images.view(n, -1), params, gen)


def robustness_augment(x: torch.Tensor, params: TrainParams, gen: torch.Generator) -> torch.Tensor:
    """The low-resolution, elastic, stroke, blur and noise augmentations that are on:
    (N, 784) -> (N, 784)."""
    if params.augment_lowres:
        x = low_resolution(x, params.augment_lowres, params.augment_lowres_sides, gen)
    if params.augment_elastic:
        x = elastic_distort(x, params.augment_elastic, params.augment_elastic_sigma, gen)
    if params.augment_stroke:
        x = vary_strokes(x, params.augment_stroke, gen)
    if params.augment_blur:
        x = blur_some(x, params.augment_blur, params.augment_blur_sigma, gen)
    if params.augment_noise:
        x = add_noise(x, params.augment_noise, params.augment_noise_std, gen)
    return x


def evaluate(model: nn.Module, data: Data) -> dict[str, float]:
    """Loss and accuracy of the model (eval mode) on one split."""
    logits = predict_logits(model, data[0])
    return {
        "loss": classification.cross_entropy(logits, data[1]),
        "accuracy": classification.accuracy(logits, data[1]),
    }


@dataclass
class RunState:
    """Everything an epoch boundary must carry so a resumed run continues exactly."""

    epoch: int = 0
    history: list[dict] = dataclasses.field(default_factory=list)
    best: float | None = None
    best_epoch: int = 0
    best_weights: dict[str, torch.Tensor] | None = None


def is_better(value: float, best: float | None, monitor: str) -> bool:
    """Whether a dev figure improves on the best so far (lower loss, higher accuracy)."""
    if best is None:
        return True
    return value < best if monitor == "dev_loss" else value > best


def run_config(model: MLP, params: TrainParams, epochs: int, seed: int) -> str:
    """What a resume file must have been written with: network spec, train params, seed."""
    spec, train = dataclasses.asdict(model.spec), dataclasses.asdict(params)
    if not params.ema:  # left out while off: resume files written before it existed still match
        del train["ema"]
    return json.dumps({"spec": spec, "train": train, "epochs": epochs, "seed": seed})


RESUME_KEYS = ("config", "model", "optimizer", "scheduler", "torch_rng", "shuffle_rng", "run")


def save_state(
    path: Path, config: str, model: MLP, optimizer: TorchOptimizer, scheduler: Scheduler,
    gen: torch.Generator, run: RunState, averaged: AveragedModel | None = None,
) -> None:  # fmt: skip
    """Write the resume file atomically: weights, optimizer, schedule, RNGs, progress, and the
    weight average when there is one."""
    payload = {
        "config": config,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "torch_rng": torch.get_rng_state(),
        "shuffle_rng": gen.get_state(),
        "run": dataclasses.asdict(run),
    }
    if averaged is not None:
        payload["ema"] = averaged.state_dict()
    with atomic_path(path) as tmp, tmp.open("wb") as f:
        torch.save(payload, f)


def load_state(
    path: Path, config: str, model: MLP, optimizer: TorchOptimizer, scheduler: Scheduler,
    gen: torch.Generator, averaged: AveragedModel | None = None,
) -> RunState:  # fmt: skip
    """Restore a resume file written by save_state with the same config; return the progress."""
    payload = read_torch_file(path, *RESUME_KEYS)
    if payload.get("config") != config:
        raise click.ClickException(
            f"{path} was written with another network, other train params or seed; cannot resume"
        )
    model.load_state_dict(payload["model"])
    optimizer.load_state_dict(payload["optimizer"])
    scheduler.load_state_dict(payload["scheduler"])
    torch.set_rng_state(payload["torch_rng"])
    gen.set_state(payload["shuffle_rng"])
    if averaged is not None:  # the config names the decay, so a file that matches holds it
        averaged.load_state_dict(payload["ema"])
    return RunState(**payload["run"])


def weight_average(model: MLP, params: TrainParams) -> AveragedModel | None:
    """An exponential moving average of the weights and BN statistics, or None when off."""
    if not params.ema:
        return None
    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(params.ema), use_buffers=True)


def fit(
    model: MLP,
    train: Data,
    dev: Data,
    params: TrainParams,
    *,
    epochs: int | None = None,
    log: Callable[[dict], None] | None = None,
    state_path: Path | None = None,
    resume: bool = False,
    seed: int = 0,
    progress: bool = False,
    probe: Probe | None = None,
) -> list[dict]:
    """Train in place (best weights restored if early stopping, else the weight average if
    `ema`); per-epoch history dicts."""
    epochs = epochs or params.epochs
    x = torch.from_numpy(np.ascontiguousarray(train[0]))  # (N, 784) uint8, cast per batch
    y = torch.from_numpy(np.asarray(train[1], dtype=np.int64))
    steps = -(-len(y) // params.batch_size)
    gen = torch.Generator().manual_seed(seed)
    optimizer = make_optimizer(model.parameters(), params)
    scheduler = make_scheduler(optimizer, params, steps, epochs)
    run, config = RunState(), run_config(model, params, epochs, seed)
    averaged = weight_average(model, params)
    judged = model if averaged is None else averaged.module  # what dev figures are taken of
    if resume and state_path is not None and state_path.exists():
        run = load_state(state_path, config, model, optimizer, scheduler, gen, averaged)
    for epoch in range(run.epoch + 1, epochs + 1):
        lr = optimizer.param_groups[0]["lr"]
        finish = probe(model) if probe is not None else None
        model.train()
        sums = train_epoch(model, x, y, optimizer, scheduler, gen, params, progress, epoch,
                           averaged)  # fmt: skip
        figures = evaluate(judged, dev)
        row = {"epoch": epoch, **sums, "dev_loss": figures["loss"]}
        row.update(dev_accuracy=figures["accuracy"], lr=lr)
        if finish is not None:
            row["diagnostics"] = finish()
        run.history.append(row)
        run.epoch = epoch
        stop = track_best(judged, run, row, params)
        if state_path is not None:
            save_state(state_path, config, model, optimizer, scheduler, gen, run, averaged)
        if log is not None:
            log(row)
        if stop:
            break
    if run.best_weights is not None:
        model.load_state_dict(run.best_weights)
    elif averaged is not None:
        model.load_state_dict(averaged.module.state_dict())
    model.eval()
    return run.history


def track_best(model: MLP, run: RunState, row: dict, params: TrainParams) -> bool:
    """Remember the best weights by the monitored dev figure; True when patience runs out."""
    monitor = params.early_stopping
    if monitor == "none":
        return False
    if is_better(row[monitor], run.best, monitor):
        run.best, run.best_epoch = row[monitor], row["epoch"]
        run.best_weights = copy.deepcopy(model.state_dict())
    return row["epoch"] - run.best_epoch >= params.patience


def train_epoch(
    model: MLP, x: torch.Tensor, y: torch.Tensor, optimizer: TorchOptimizer, scheduler: Scheduler,
    gen: torch.Generator, params: TrainParams, progress: bool, epoch: int,
    averaged: AveragedModel | None = None,
) -> dict[str, float]:  # fmt: skip
    """One pass over a fresh permutation; mean train loss and accuracy from the same forwards.
    The weight average, if any, takes in the weights after every step."""
    order = torch.randperm(len(y), generator=gen)
    loss_sum, correct = torch.zeros(()), torch.zeros((), dtype=torch.int64)
    batches = range(0, len(y), params.batch_size)
    if progress:
        from tqdm import tqdm

        batches = tqdm(batches, desc=f"epoch {epoch}", leave=False, file=sys.stderr)
    for start in batches:
        idx = order[start : start + params.batch_size]
        xb, yb = x[idx].float(), y[idx]  # (B, 784) float pixels 0–255
        if params.augment:
            xb = augment_batch(xb, yb, params, gen)
        logits = model(xb)  # (B, 10)
        loss = data_loss(logits, yb, params)
        objective = loss + penalty(model, params.l1) if params.l1 else loss
        optimizer.zero_grad(set_to_none=True)
        objective.backward()
        if params.clip_norm is not None:
            nn.utils.clip_grad_norm_(model.parameters(), params.clip_norm)
        optimizer.step()
        scheduler.step()
        if params.max_norm is not None:
            apply_max_norm(model, params.max_norm)
        if averaged is not None:
            averaged.update_parameters(model)
        loss_sum += loss.detach() * len(idx)
        correct += (logits.detach().argmax(dim=1) == yb).sum()
        if progress:
            batches.set_postfix(loss=f"{loss.item():.4f}", refresh=False)
    return {"train_loss": loss_sum.item() / len(y), "train_accuracy": correct.item() / len(y)}


def take_subset(data: Data, fraction: float, seed: int) -> Data:
    """A seeded random share of a split, in its original order; the split itself at 1."""
    if fraction >= 1:
        return data  # untouched, so the full-budget run is byte-identical to one without subset
    n = len(data[1])
    keep = np.random.default_rng(seed).permutation(n)[: max(1, round(fraction * n))]
    keep.sort()
    return data[0][keep], data[1][keep]


def load_data(prepared: Path) -> tuple[Data, Data, AffineTransform]:
    """The train and dev splits and the fitted transform."""
    train, dev = (read_split(prepared / f"{name}.npz") for name in ("train", "dev"))
    return train, dev, AffineTransform.load(prepared / "transform.npz")
