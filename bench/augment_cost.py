"""What the robustness augmentations cost in training time: epochs of the train loop per setting.

The train stage's epoch loop (pipeline.training.loop.train_epoch) on the same samples of
data/prepared/train.npz with the network of params.yaml `model:`, under: no augmentation, the
default affine, the affine plus each robustness augmentation alone, and the combinations
bench/robust_train.py calls `pixel` and `all` (same settings). Rounds alternate between the
settings so load changes on a shared machine hit all alike; the fastest round of each counts,
in wall and in process CPU time.
Writes bench/results/augment_cost.json; prints one line per setting.
Run: `python bench/augment_cost.py [--samples 20000] [--rounds 3]`"""

from __future__ import annotations

import copy
import dataclasses
import os
import platform
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as pipeline/__init__.py, torch loads first

import click
import numpy as np
import torch

from digits.atomic import write_json
from pipeline.config import BaseParams, load_group, seed_everything
from pipeline.model.network import ModelParams, build_mlp
from pipeline.training.loop import load_data, train_epoch
from pipeline.training.optim import make_optimizer, make_scheduler
from pipeline.training.params import TrainParams

ROBUST = {
    "augment_elastic": 34.0,
    "augment_stroke": 0.5,
    "augment_blur": 0.3,
    "augment_noise": 0.3,
}
PIXEL = {key: ROBUST[key] for key in ("augment_stroke", "augment_blur", "augment_noise")}
SETTINGS = {
    "none": {"augment": False},
    "affine (default)": {"augment": True},
    **{f"affine + {key.removeprefix('augment_')}": {key: value} for key, value in ROBUST.items()},
    "affine + stroke, blur, noise (pixel)": PIXEL,
    "affine + all four (all)": ROBUST,
}


@click.command()
@click.option("--params", "params_file", type=click.Path(path_type=Path), default="params.yaml")
@click.option("--data", "prepared", type=click.Path(path_type=Path), default="data/prepared")
@click.option("--samples", default=20000, show_default=True, help="Train samples per epoch.")
@click.option("--rounds", default=3, show_default=True, help="Timed epochs per setting.")
@click.option("--out", type=click.Path(path_type=Path), default="bench/results/augment_cost.json")
def main(params_file: Path, prepared: Path, samples: int, rounds: int, out: Path) -> None:
    """Seconds per epoch under each augmentation setting, and the ratio to the default."""
    seed_everything(load_group(BaseParams, "base", params_file).seed)
    base = load_group(TrainParams, "train", params_file)
    train, _, transform = load_data(prepared)
    x = torch.from_numpy(np.ascontiguousarray(train[0][:samples]))
    y = torch.from_numpy(train[1][:samples].astype(np.int64))
    model = build_mlp(load_group(ModelParams, "model", params_file), transform).train()
    steps = -(-samples // base.batch_size)
    runs = {}
    for name, changes in SETTINGS.items():
        params = dataclasses.replace(base, **changes)
        net = copy.deepcopy(model)
        optimizer = make_optimizer(net.parameters(), params)
        scheduler = make_scheduler(optimizer, params, steps, rounds + 2)
        gen = torch.Generator().manual_seed(0)
        runs[name] = (lambda n=net, o=optimizer, s=scheduler, g=gen, p=params:
                      train_epoch(n, x, y, o, s, g, p, False, 0))  # fmt: skip
        runs[name]()  # warm-up, untimed
    seconds: dict[str, list[tuple[float, float]]] = {name: [] for name in runs}
    for _ in range(rounds):
        for name, run in runs.items():
            wall, cpu = time.perf_counter(), time.process_time()
            run()
            seconds[name].append((time.perf_counter() - wall, time.process_time() - cpu))
    # The fastest round is the one least disturbed by other jobs; CPU time is disturbed less.
    best = {name: min(wall for wall, _ in times) for name, times in seconds.items()}
    cpu = {name: min(c for _, c in times) for name, times in seconds.items()}
    default, default_cpu = best["affine (default)"], cpu["affine (default)"]
    result = {
        "samples": samples,
        "batch_size": base.batch_size,
        "rounds": rounds,
        "threads": torch.get_num_threads(),
        "machine": platform.machine(),
        "settings": {name: SETTINGS[name] for name in runs},
        "seconds": seconds,
        "epoch_seconds_60k": {name: round(s * 60000 / samples, 2) for name, s in best.items()},
        "vs_default": {name: round(s / default, 3) for name, s in best.items()},
        "cpu_vs_default": {name: round(c / default_cpu, 3) for name, c in cpu.items()},
    }
    write_json(out, result)
    for name, s in best.items():
        click.echo(
            f"augment_cost: {name}: {s * 60000 / samples:.1f} s per 60k-image epoch, "
            f"{s / default:.2f}× the default ({cpu[name] / default_cpu:.2f}× in CPU time)"
        )


if __name__ == "__main__":
    main()
