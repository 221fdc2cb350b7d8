"""Accuracy over seeds: the whole pipeline once per base.seed, as named DVC experiments.

Each seed runs `dvc exp run --temp -n seed-<N> -S base.seed=<N>` (an experiment already named
so is reused, so an interrupted run continues), then the figures come from `dvc exp show`.
The seed params.yaml already has is taken from the workspace's metrics (run `dvc repro` first).
Writes bench/results/seed_band.json (each seed's figures, mean ± std, the CPU) and prints the
`report:` group for params.yaml. Needs the data fetched (dvc repro fetch).
Run: `python bench/seed_band.py --seeds 42 1 2` (a full pipeline per seed: minutes each)
"""

from __future__ import annotations

import json
import platform
import statistics
import subprocess
from pathlib import Path

import click

from digits.atomic import write_json
from pipeline.config import BaseParams, load_group
from pipeline.experiments.dvc_runs import experiments as shown_experiments

FIGURES = {
    "dense_test": ("reports/evaluate.json", ("dense", "test_accuracy")),
    "compressed_test": ("reports/evaluate.json", ("compressed", "test_accuracy")),
    "dense_dev": ("reports/compress.json", ("dev_accuracy_before",)),
    "compressed_dev": ("reports/compress.json", ("dev_accuracy_after",)),
    "sparsity": ("reports/compress.json", ("sparsity",)),
    # The deployed model through the image path (the robustness stage, docs/robustness.md).
    "image_path_clean": ("reports/robustness.json", ("clean_accuracy",)),
    "corruption_mean": ("reports/robustness.json", ("mean_corruption_accuracy",)),
    "font_set": ("reports/robustness.json", ("font_accuracy",)),
    "handwriting": ("reports/robustness.json", ("handwriting_accuracy",)),
}


def experiments() -> dict[str, dict]:
    """Metrics of every experiment, of any commit, by experiment name."""
    return {name: exp.metrics for name, exp in shown_experiments().items()}


def workspace() -> tuple[int, dict[str, dict]]:
    """The workspace's base.seed and metrics (dvc metrics show)."""
    shown = subprocess.run(["dvc", "metrics", "show", "--json"], capture_output=True, text=True)
    shown.check_returncode()
    [data] = json.loads(shown.stdout.splitlines()[0]).values()
    metrics = {path: m["data"] for path, m in data["data"].items()}
    return load_group(BaseParams, "base").seed, metrics


def figures(
    metrics: dict[str, dict], wanted: dict[str, tuple[str, tuple[str, ...]]] = FIGURES
) -> dict[str, float]:
    """The figures `wanted` names (name -> metrics file, key path), from one run's metrics."""
    out = {}
    for name, (path, keys) in wanted.items():
        value = metrics[path]
        for key in keys:
            value = value[key]
        out[name] = value
    return out


def cpu_name() -> str:
    """The CPU model, as lscpu names it."""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


@click.command()
@click.option("--seeds", "-s", multiple=True, type=int, default=(42, 1, 2), show_default=True)
@click.option("--out", type=click.Path(path_type=Path), default="bench/results/seed_band.json")
def main(seeds: tuple[int, ...], out: Path) -> None:
    """Run the pipeline once per seed and summarize test accuracy as mean ± std."""
    current, metrics = workspace()
    for seed in seeds:
        if seed != current and f"seed-{seed}" not in experiments():
            command = [
                "dvc",
                "exp",
                "run",
                "--temp",
                "-n",
                f"seed-{seed}",
                "-S",
                f"base.seed={seed}",
            ]
            subprocess.run(command, check=True)
    found = {**experiments(), f"seed-{current}": metrics}
    runs = {seed: figures(found[f"seed-{seed}"]) for seed in seeds}
    summary = {
        name: [
            statistics.mean(r[name] for r in runs.values()),
            statistics.stdev(r[name] for r in runs.values()),
        ]
        for name in FIGURES
    }
    write_json(out, {"seeds": list(seeds), "cpu": cpu_name(), "runs": runs, "summary": summary})
    for name, (mean, std) in summary.items():
        click.echo(f"{name}: {100 * mean:.2f} ± {100 * std:.2f} %  (seeds {list(seeds)})")
    band = {"seeds": list(seeds), **{k: summary[k] for k in ("dense_test", "compressed_test")}}
    click.echo(f"params.yaml report: {json.dumps(band)}")


if __name__ == "__main__":
    main()
