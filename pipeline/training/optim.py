"""Optimizers and learning-rate schedules named in params.yaml `train:` (TrainParams).

A schedule is a closed-form factor of the base lr at fractional epoch t (step / steps_per_epoch),
times an optional linear warmup; torch's LambdaLR applies it every batch and checkpoints its step.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch

from pipeline.training.params import TrainParams


def make_optimizer(
    parameters: Iterable[torch.nn.Parameter], p: TrainParams
) -> torch.optim.Optimizer:
    """The torch optimizer named by p.optimizer; weight_decay is L2 (decoupled for adamw)."""
    params, lr, wd = list(parameters), p.lr, p.weight_decay
    if p.optimizer == "sgd":
        return torch.optim.SGD(params, lr=lr, weight_decay=wd, fused=True)
    if p.optimizer in ("momentum", "nesterov"):
        nesterov = p.optimizer == "nesterov"
        return torch.optim.SGD(
            params, lr=lr, momentum=p.momentum, nesterov=nesterov, weight_decay=wd, fused=True
        )
    if p.optimizer == "adagrad":
        return torch.optim.Adagrad(params, lr=lr, weight_decay=wd, fused=True)
    if p.optimizer == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr, momentum=p.momentum, weight_decay=wd)
    adam = torch.optim.AdamW if p.optimizer == "adamw" else torch.optim.Adam
    return adam(params, lr=lr, betas=tuple(p.betas), weight_decay=wd, fused=True)


def schedule_factor(p: TrainParams, t: float, total: float) -> float:
    """Multiplier of the base lr at epoch t (fractional) of a run of `total` epochs."""
    progress = min(t / total, 1.0) if total > 0 else 1.0
    if p.schedule == "step":
        return p.gamma ** math.floor(t / p.step_epochs)
    if p.schedule == "exponential":
        return p.gamma**t
    if p.schedule == "inverse_time":
        return 1.0 / (1.0 + p.decay * t)
    if p.schedule == "polynomial":
        return (1.0 - progress) ** p.power
    if p.schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    if p.schedule == "one_cycle":
        return one_cycle_factor(p, progress)
    return 1.0


def one_cycle_factor(p: TrainParams, progress: float) -> float:
    """Cosine up from lr/div_factor to lr over pct_start, then down to lr/div/final_div."""
    low, end = 1.0 / p.div_factor, 1.0 / (p.div_factor * p.final_div_factor)
    if progress < p.pct_start:
        return cosine_between(low, 1.0, progress / p.pct_start)
    return cosine_between(1.0, end, (progress - p.pct_start) / (1.0 - p.pct_start))


def cosine_between(start: float, stop: float, fraction: float) -> float:
    """Cosine interpolation from start (fraction 0) to stop (fraction 1)."""
    return stop + (start - stop) * 0.5 * (1.0 + math.cos(math.pi * fraction))


def lr_lambda(p: TrainParams, steps_per_epoch: int, epochs: int) -> Callable[[int], float]:
    """The per-step factor LambdaLR needs: schedule at t = step/steps_per_epoch, times warmup."""

    def factor(step: int) -> float:
        t = step / steps_per_epoch
        warm = min(1.0, (t + 1 / steps_per_epoch) / p.warmup) if p.warmup > 0 else 1.0
        return warm * schedule_factor(p, t, epochs)

    return factor


def make_scheduler(
    optimizer: torch.optim.Optimizer, p: TrainParams, steps_per_epoch: int, epochs: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """A per-batch LambdaLR following p.schedule over `epochs` epochs."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(p, steps_per_epoch, epochs))
