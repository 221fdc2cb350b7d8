"""Techniques measured on real MNIST over seeds: ensembles, residual connections, noisy ReLU.

Every run trains the train stage's network (`pipeline.training.loop.fit`) with params.yaml's `model`
and `train` groups, changed only where a study says so and by the options here (epochs,
augmentation), on data/prepared/{train,dev,test}.npz, one seed per run (torch and the shuffle).
Studies:
- ensemble: `--members` networks of the params.yaml shape, seeds 0..k-1, combined by mean and by
  vote; test accuracy beside the members' mean ± std, and the cost: ONNX file size and ONNX
  Runtime latency (one CPU session, batch 1 and 1024) of the ensemble against one member;
- residual: `--width`-wide plain vs residual MLPs at depth 6 and 10, batchnorm on and off,
  dropout off;
- noisy_relu: the network with relu vs noisy_relu (model.noise_std).
`--hidden` changes the widths of the ensemble's and noisy_relu's network (default: params.yaml).
Writes `--out` (bench/results/techniques.json: every run, mean ± std per arm, the CPU) and
prints one Markdown table.
Run: `python bench/techniques.py [--epochs 2] [--seeds 0 --seeds 1 ...] [--study ensemble ...]`
(a run of the 256-128 network takes about 4 minutes on 2 busy shared cores).
"""

from __future__ import annotations

import dataclasses
import platform
import statistics
import tempfile
import time
from pathlib import Path

import click
import numpy as np
import onnx
import onnxruntime as ort
import torch

from digits.atomic import write_json
from digits.npz import read_split
from pipeline.analysis.classification import accuracy
from pipeline.config import load_group, seed_everything
from pipeline.model.network import MLP, ModelParams, build_mlp, predict_logits
from pipeline.onnx_export.ensemble_graph import (
    Ensemble,
    build_ensemble_onnx,
    ensemble_probabilities,
)
from pipeline.onnx_export.graph import build_onnx
from pipeline.training.loop import fit, load_data
from pipeline.training.params import TrainParams

ROOT = Path(__file__).resolve().parent.parent
RESULT = ROOT / "bench/results/techniques.json"
STUDIES = ("ensemble", "residual", "noisy_relu")
DEPTHS = (6, 10)


@dataclasses.dataclass(frozen=True)
class Setup:
    """What every run shares: data, the params.yaml groups with the bench's changes."""

    train: tuple[np.ndarray, np.ndarray]
    dev: tuple[np.ndarray, np.ndarray]
    test: tuple[np.ndarray, np.ndarray]
    transform: object
    model: ModelParams
    params: TrainParams


def cpu_name() -> str:
    """The CPU model as /proc/cpuinfo names it (the figures hold for this CPU kind)."""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return f"{line.split(':', 1)[1].strip()}, {torch.get_num_threads()} threads"
    return platform.processor()


def train_one(setup: Setup, seed: int, **model: object) -> MLP:
    """The network of params.yaml (with `model` changes) trained with one seed."""
    seed_everything(seed)
    net = build_mlp(dataclasses.replace(setup.model, **model), setup.transform)
    fit(net, setup.train, setup.dev, setup.params, seed=seed)
    return net.eval()


def scores(net: MLP, setup: Setup) -> dict[str, float]:
    """Dev and test accuracy of one network."""
    return {
        split: accuracy(predict_logits(net, getattr(setup, split)[0]), getattr(setup, split)[1])
        for split in ("dev", "test")
    }


def band(values: list[float]) -> dict[str, float]:
    """Mean and sample std of a list of accuracies."""
    return {"mean": statistics.mean(values), "std": statistics.stdev(values), "n": len(values)}


def latency_ms(path: Path, x: np.ndarray, runs: int) -> float:
    """Median ms of one ONNX Runtime CPU run on batch x."""
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feed = {"pixels": np.ascontiguousarray(x, dtype=np.float32)}
    for _ in range(3):
        session.run(["probabilities"], feed)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        session.run(["probabilities"], feed)
        times.append(time.perf_counter() - start)
    return float(np.median(times)) * 1e3


def ensemble_cost(members: list[MLP], x: np.ndarray) -> dict:
    """File size and latency at batch 1 / 1024 of the ensemble graph against its first member."""
    with tempfile.TemporaryDirectory() as tmp:
        files = {"member": Path(tmp) / "member.onnx", "ensemble": Path(tmp) / "ensemble.onnx"}
        onnx.save(build_onnx(members[0], 18), files["member"])
        onnx.save(build_ensemble_onnx(members, "mean", 18), files["ensemble"])
        return {
            name: {
                "file_bytes": path.stat().st_size,
                "batch1_ms": latency_ms(path, x[:1], 300),
                "batch1024_ms": latency_ms(path, x[:1024], 20),
            }
            for name, path in files.items()
        }


def study_ensemble(setup: Setup, members: int) -> dict:
    """k members by seed 0..k-1; the ensemble's test accuracy beside the members' spread."""
    nets, rows = [], []
    for seed in range(members):
        nets.append(train_one(setup, seed))
        rows.append({"seed": seed, **scores(nets[-1], setup)})
        click.echo(f"ensemble member {seed}: {rows[-1]}", err=True)
    x, y = setup.test
    combined = {
        combine: accuracy(ensemble_probabilities(Ensemble(nets, combine), x), y)
        for combine in ("mean", "vote")
    }
    return {
        "members": rows,
        "members_test": band([row["test"] for row in rows]),
        "ensemble_test": combined,
        "cost": ensemble_cost(nets, x),
    }


def study_arms(setup: Setup, arms: dict[str, dict], seeds: list[int]) -> dict:
    """Each arm (a set of model changes) trained once per seed; accuracies and their band."""
    results = {}
    for name, changes in arms.items():
        rows = []
        for seed in seeds:
            rows.append({"seed": seed, **scores(train_one(setup, seed, **changes), setup)})
            click.echo(f"{name} seed {seed}: {rows[-1]}", err=True)
        results[name] = {
            "model": {k: list(v) if isinstance(v, tuple) else v for k, v in changes.items()},
            "runs": rows,
            "dev": band([row["dev"] for row in rows]),
            "test": band([row["test"] for row in rows]),
        }
    return results


def residual_arms(width: int, batchnorms: tuple[bool, ...]) -> dict[str, dict]:
    """Plain vs residual at each depth, with batchnorm on and/or off."""
    arms = {}
    for depth in DEPTHS:
        for batchnorm in batchnorms:
            for residual in (False, True):
                name = f"depth {depth}, {'BN' if batchnorm else 'no BN'}, " + (
                    "residual" if residual else "plain"
                )
                arms[name] = {
                    "hidden": (width,) * depth,
                    "batchnorm": batchnorm,
                    "residual": residual,
                    "dropout": 0.0,  # one rate for any depth; dropout is not what is compared
                }
    return arms


def table(result: dict) -> list[str]:
    """Markdown rows: arm, dev and test accuracy mean ± std over seeds."""
    lines = ["| study | arm | dev accuracy | test accuracy |", "|---|---|---|---|"]

    def pm(b: dict) -> str:
        return f"{100 * b['mean']:.2f} ± {100 * b['std']:.2f} %"

    if "ensemble" in result:
        e = result["ensemble"]
        k = len(e["members"])
        lines.append(f"| ensemble | {k} members (test, mean ± std) | | {pm(e['members_test'])} |")
        for combine, value in e["ensemble_test"].items():
            lines.append(f"| ensemble | {k}-member ensemble, {combine} | | {100 * value:.2f} % |")
    for study in ("residual", "noisy_relu"):
        for arm, figures in result.get(study, {}).items():
            lines.append(f"| {study} | {arm} | {pm(figures['dev'])} | {pm(figures['test'])} |")
    return lines


@click.command()
@click.option(
    "--params", "params_file", type=click.Path(path_type=Path), default=ROOT / "params.yaml"
)
@click.option("--data", type=click.Path(path_type=Path), default=ROOT / "data/prepared")
@click.option("--study", "studies", multiple=True, type=click.Choice(STUDIES), help="Default: all.")
@click.option("--seeds", multiple=True, type=int, default=(0, 1, 2), show_default=True)
@click.option("--epochs", default=2, show_default=True, help="Epochs per run (params: 15).")
@click.option("--augment/--no-augment", default=False, show_default=True, help="train.augment.")
@click.option("--members", default=5, show_default=True, help="Ensemble members.")
@click.option("--width", default=64, show_default=True, help="Hidden width of the depth study.")
@click.option(
    "--hidden", multiple=True, type=int, help="Hidden widths of the ensemble and noisy ReLU nets."
)
@click.option(
    "--batchnorm",
    "batchnorms",
    multiple=True,
    type=click.Choice(["on", "off"]),
    help="Depth study: batchnorm on, off (default: both).",
)
@click.option("--out", type=click.Path(path_type=Path), default=RESULT, show_default=True)
def main(
    params_file: Path, data: Path, studies: tuple[str, ...], seeds: tuple[int, ...], epochs: int,
    augment: bool, members: int, width: int, hidden: tuple[int, ...], batchnorms: tuple[str, ...],
    out: Path,
) -> None:  # fmt: skip
    """Measure ensembles, residual connections and noisy ReLU over seeds on prepared MNIST."""
    train, dev, transform = load_data(data)
    params = load_group(TrainParams, "train", params_file)
    model = load_group(ModelParams, "model", params_file)
    setup = Setup(
        train,
        dev,
        read_split(data / "test.npz"),
        transform,
        dataclasses.replace(model, hidden=hidden or model.hidden),
        dataclasses.replace(params, epochs=epochs, augment=augment),
    )
    started = time.perf_counter()
    result: dict = {
        "cpu": cpu_name(),
        "epochs": epochs,
        "augment": augment,
        "seeds": list(seeds),
        "hidden": list(setup.model.hidden),
        "depth_study_width": width,
    }
    for study in studies or STUDIES:
        if study == "ensemble":
            result["ensemble"] = study_ensemble(setup, members)
        elif study == "residual":
            bns = tuple(choice == "on" for choice in batchnorms or ("on", "off"))
            result["residual"] = study_arms(setup, residual_arms(width, bns), list(seeds))
        else:
            arms = {"relu": {"activation": "relu"}, "noisy_relu": {"activation": "noisy_relu"}}
            result["noisy_relu"] = study_arms(setup, arms, list(seeds))
        write_json(out, result)  # after each study: an interrupted run keeps what it has
    result["seconds"] = round(time.perf_counter() - started)
    write_json(out, result)
    click.echo("\n".join(table(result)))


if __name__ == "__main__":
    main()
