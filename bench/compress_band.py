"""Compression over whitening options and seeds: the pipeline per (whitening, base.seed) pair.

Each pair runs `dvc exp run --temp -n compress-<whitening>-seed-<N> -S data.whitening=<w>
-S base.seed=<N> evaluate` (plus `-S data.components=<k>` for pca; none runs are named
seed-<N>); an experiment already named so is reused, so an interrupted run continues. The
figures come from `dvc exp show`: learned-weight sparsity, dev accuracy drop (mean and
worst), compressed test accuracy (mean ± std), whether the targets were met, and
multiply-adds per image.
Rankings use dev; test is reported only.
Writes bench/results/compress_band.json and prints one line per whitening option.
Needs the data fetched (dvc repro fetch).
Run: `python bench/compress_band.py` (9 pipelines through evaluate: about an hour on 2 cores)
"""

from __future__ import annotations

import statistics
import subprocess
from pathlib import Path

import click
from seed_band import (  # same folder: the one reader of `dvc exp show`
    cpu_name,
    experiments,
    figures,
)

from digits.atomic import write_json

WHITENINGS = ("none", "pca", "zca")
FIGURES = {
    "sparsity": ("reports/compress.json", ("sparsity",)),
    "dev_drop_pp": ("reports/compress.json", ("dev_accuracy_drop_pp",)),
    "targets_met": ("reports/compress.json", ("targets_met",)),
    "macs_per_image": ("reports/compress.json", ("deployed", "macs_per_image")),
    "compressed_test": ("reports/evaluate.json", ("compressed", "test_accuracy")),
}


def experiment_name(whitening: str, seed: int) -> str:
    """The DVC experiment name of one (whitening, seed) pair.

    Whitening none is the default pipeline, so its runs are the seed band's own (seed-N):
    `python bench/seed_band.py --seeds 0 1 2` then reuses them instead of running them again.
    """
    return f"seed-{seed}" if whitening == "none" else f"compress-{whitening}-seed-{seed}"


def run_experiment(whitening: str, seed: int, components: int) -> None:
    """Run the pipeline through evaluate once as a named temporary experiment."""
    # The figures come from compress and evaluate: learning-curve, export and report would add
    # minutes per run and no figure.
    command = ["dvc", "exp", "run", "--temp", "-n", experiment_name(whitening, seed), "evaluate"]
    command += ["-S", f"data.whitening={whitening}", "-S", f"base.seed={seed}"]
    if whitening == "pca":  # k < 784: the map is 784 x k, kept apart from a sparse first layer
        command += ["-S", f"data.components={components}"]
    subprocess.run(command, check=True)


def summarize(runs: list[dict[str, float]]) -> dict[str, float]:
    """Mean sparsity, mean and worst dev drop, test mean ± std, how many runs met targets."""
    test = [run["compressed_test"] for run in runs]
    drops = [run["dev_drop_pp"] for run in runs]
    return {
        "sparsity_mean": statistics.mean(run["sparsity"] for run in runs),
        "dev_drop_pp_mean": statistics.mean(drops),
        "dev_drop_pp_worst": max(drops),
        "compressed_test_mean": statistics.mean(test),
        "compressed_test_std": statistics.stdev(test) if len(test) > 1 else 0.0,
        "macs_per_image_mean": statistics.mean(run["macs_per_image"] for run in runs),
        "targets_met": sum(bool(run["targets_met"]) for run in runs),
    }


@click.command()
@click.option(
    "--whitening",
    "-w",
    multiple=True,
    type=click.Choice(WHITENINGS),
    default=WHITENINGS,
    show_default=True,
    help="data.whitening options to compare.",
)
@click.option(
    "--seeds",
    "-s",
    multiple=True,
    type=int,
    default=(0, 1, 2),
    show_default=True,
    help="base.seed.",
)
@click.option(
    "--components", type=click.IntRange(1, 783), default=50, show_default=True, help="PCA's k."
)
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default="bench/results/compress_band.json",
    show_default=True,
    help="Result JSON.",
)
def main(whitening: tuple[str, ...], seeds: tuple[int, ...], components: int, out: Path) -> None:
    """Compress once per whitening option and seed; summarize sparsity, dev drop and test."""
    for option in whitening:
        for seed in seeds:
            if experiment_name(option, seed) not in experiments():
                run_experiment(option, seed, components)
    found = experiments()
    runs = {
        option: {seed: figures(found[experiment_name(option, seed)], FIGURES) for seed in seeds}
        for option in whitening
    }
    summary = {option: summarize(list(runs[option].values())) for option in whitening}
    result = {"seeds": list(seeds), "components": components, "cpu": cpu_name()}
    write_json(out, {**result, "runs": runs, "summary": summary})
    for option, s in summary.items():
        click.echo(
            f"{option}: sparsity {s['sparsity_mean']:.3f}, dev drop {s['dev_drop_pp_mean']:.2f} pp "
            f"(worst {s['dev_drop_pp_worst']:.2f}), compressed test "
            f"{100 * s['compressed_test_mean']:.2f} ± {100 * s['compressed_test_std']:.2f} %, "
            f"targets met {s['targets_met']}/{len(seeds)}  (seeds {list(seeds)})"
        )


if __name__ == "__main__":
    main()
