"""Train-loop throughput: the train stage's epoch loop vs a bare PyTorch loop, same run.

Both train copies of the same network (params.yaml `model:`) with the same optimizer and batch
size on the same samples of data/prepared/train.npz; the stage loop also steps its lr schedule
and tallies loss and accuracy. Augmentation is off in both, so the ratio measures loop overhead.
Rounds alternate (bare, stage, bare, ...) so load changes on a shared machine hit both alike.
Writes bench/results/train_throughput.json; prints one line.
Run: `python bench/train_throughput.py [--samples 20000] [--rounds 5]`
"""

from __future__ import annotations

import copy
import dataclasses
import os
import platform
import time
from pathlib import Path

# As in pipeline/__init__.py (torch loads first here): busy-waiting OpenMP threads starve
# each other on a loaded machine.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import click
import numpy as np
import torch
from torch.nn import functional as F

from digits.atomic import write_json
from pipeline.config import BaseParams, load_group, seed_everything
from pipeline.model.network import ModelParams, build_mlp
from pipeline.training.loop import load_data, train_epoch
from pipeline.training.optim import make_optimizer, make_scheduler
from pipeline.training.params import TrainParams


def bare_epoch(model, x, y, optimizer, batch_size: int) -> None:
    """The textbook loop: shuffle, slice, forward, cross-entropy, backward, step."""
    order = torch.randperm(len(y))
    for start in range(0, len(y), batch_size):
        idx = order[start : start + batch_size]
        loss = F.cross_entropy(model(x[idx].float()), y[idx])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()


def timed(run) -> tuple[float, float]:
    """(wall, CPU) seconds one call takes; CPU time is less disturbed by other jobs."""
    wall, cpu = time.perf_counter(), time.process_time()
    run()
    return time.perf_counter() - wall, time.process_time() - cpu


@click.command()
@click.option("--params", "params_file", type=click.Path(path_type=Path), default="params.yaml")
@click.option("--data", "prepared", type=click.Path(path_type=Path), default="data/prepared")
@click.option("--samples", default=20000, show_default=True, help="Train samples per epoch.")
@click.option("--rounds", default=5, show_default=True, help="Timed epochs per loop.")
@click.option(
    "--out", type=click.Path(path_type=Path), default="bench/results/train_throughput.json"
)
def main(params_file: Path, prepared: Path, samples: int, rounds: int, out: Path) -> None:
    """Measure samples/s of both loops and their ratio."""
    seed_everything(load_group(BaseParams, "base", params_file).seed)
    params = dataclasses.replace(load_group(TrainParams, "train", params_file), augment=False)
    train, _, transform = load_data(prepared)
    x = torch.from_numpy(np.ascontiguousarray(train[0][:samples]))
    y = torch.from_numpy(train[1][:samples].astype(np.int64))
    model = build_mlp(load_group(ModelParams, "model", params_file), transform)
    bare_model, stage_model = copy.deepcopy(model).train(), copy.deepcopy(model).train()
    bare_opt = make_optimizer(bare_model.parameters(), params)
    stage_opt = make_optimizer(stage_model.parameters(), params)
    steps = -(-samples // params.batch_size)
    scheduler = make_scheduler(stage_opt, params, steps, rounds + 1)
    gen = torch.Generator().manual_seed(0)

    def stage() -> None:
        train_epoch(stage_model, x, y, stage_opt, scheduler, gen, params, False, 0)

    bare_epoch(bare_model, x, y, bare_opt, params.batch_size)  # warm-up, untimed
    stage()
    bare_s, stage_s = [], []
    for _ in range(rounds):
        bare_s.append(timed(lambda: bare_epoch(bare_model, x, y, bare_opt, params.batch_size)))
        stage_s.append(timed(stage))
    # The fastest round is the one least disturbed by other jobs on a shared machine.
    bare_rate, stage_rate = (
        samples / min(w for w, _ in bare_s),
        samples / min(w for w, _ in stage_s),
    )
    cpu_ratio = min(c for _, c in bare_s) / min(c for _, c in stage_s)
    result = {
        "samples": samples,
        "batch_size": params.batch_size,
        "optimizer": params.optimizer,
        "rounds": rounds,
        "threads": torch.get_num_threads(),
        "machine": platform.machine(),
        "bare_samples_per_s": round(bare_rate, 1),
        "stage_samples_per_s": round(stage_rate, 1),
        "bare_wall_cpu_seconds": bare_s,
        "stage_wall_cpu_seconds": stage_s,
        "ratio": round(stage_rate / bare_rate, 3),
        "cpu_ratio": round(cpu_ratio, 3),
    }
    write_json(out, result)
    click.echo(
        f"train_throughput: stage {stage_rate:.0f} samples/s, bare {bare_rate:.0f} samples/s, "
        f"ratio {result['ratio']:.3f} (CPU-time ratio {result['cpu_ratio']:.3f}; fastest of "
        f"{rounds}, {samples} samples) -> {out}"
    )


if __name__ == "__main__":
    main()
