"""The size–accuracy frontier: compressed test accuracy at nonzero-weight budgets, over seeds.

Each (method, budget, seed) runs the pipeline through evaluate as a named DVC experiment,
`dvc exp run --temp -n frontier-<method>-<budget>-seed-<N> -S base.seed=<N>
-S compress.budget=<budget> <the method's -S> evaluate`; an experiment already named so is
reused, so an interrupted run continues. The default recipe at the default budget is the seed
band's own run (seed-<N>, `bench/seed_band.py`) when it exists. Budgets count what the ONNX
file holds: the nonzero entries of every weight matrix (compress.json `deployed`).
Writes reports/frontier.json (one row per method and budget: nonzero weights, dev and test
mean ± std, the dense model's beside them; a DVC plot the report draws) and prints a table.
Nothing is chosen here: dev and test are both reported. Needs the data fetched (dvc repro
fetch). Run: `python bench/frontier.py` (about 8 minutes a run on 2 cores: each experiment
trains its dense model again, since DVC's run cache does not keep a stage with uncached
outputs such as train's metrics, then compresses and evaluates)
"""

from __future__ import annotations

import statistics
import subprocess
from pathlib import Path

import click
import yaml
from seed_band import cpu_name, experiments, figures  # same folder: the one reader of dvc exp show

from digits.atomic import write_json

# What each method changes in params.yaml, and the budgets it is meant for (None: every budget
# asked for); "recipe" is the default one.
METHODS: dict[str, tuple[str, dict[str, object], tuple[int, ...] | None]] = {
    "recipe": (
        "shrink 25 % of units, L1, 4-step gradual magnitude pruning (Han et al. 2015), polish",
        {},
        None,
    ),
    "shrink-eighth": (
        "the recipe from an eighth of the units (64-32): the budget's weights on few units",
        {"compress.structured_fraction": 0.875},
        (4000,),
    ),
    "shrink-quarter": (
        "the recipe from a quarter of the units (128-64)",
        {"compress.structured_fraction": 0.75},
        (8000,),
    ),
    "gradual-eighth": (
        "shrink-eighth pruned in 12 one-epoch steps, not 4 of 3 (Zhu & Gupta 2017: many small"
        " steps)",
        {"compress.structured_fraction": 0.875, "compress.steps": 12, "compress.step_epochs": 1},
        (4000,),
    ),
    "long": (
        "the recipe on a dense model trained 30 epochs (the dense-recipe study's best)",
        {"train.epochs": 30},
        (22000,),
    ),
}
FIGURES = {
    "nonzero": ("reports/compress.json", ("deployed", "nonzero_total")),
    "dev": ("reports/compress.json", ("dev_accuracy_after",)),
    "dense_dev": ("reports/compress.json", ("dev_accuracy_before",)),
    "test": ("reports/evaluate.json", ("compressed", "test_accuracy")),
    "dense_test": ("reports/evaluate.json", ("dense", "test_accuracy")),
}
SPREAD = ("nonzero", "dev", "dense_dev", "test", "dense_test")


def experiment_name(
    method: str, budget: int, seed: int, default_budget: int | None, known: set[str]
) -> str:
    """The DVC experiment of one run: the seed band's own for the default recipe and budget
    when it exists (one run through evaluate under that name would lack what the band reads)."""
    if method == "recipe" and budget == default_budget and f"seed-{seed}" in known:
        return f"seed-{seed}"
    return f"frontier-{method}-{budget}-seed-{seed}"


def run_experiment(name: str, method: str, budget: int, seed: int) -> None:
    """Run the pipeline through evaluate once as a named temporary experiment."""
    command = ["dvc", "exp", "run", "--temp", "-n", name, "evaluate"]
    command += ["-S", f"base.seed={seed}", "-S", f"compress.budget={budget}"]
    for key, value in METHODS[method][1].items():
        command += ["-S", f"{key}={value}"]
    subprocess.run(command, check=True)


def summarize(runs: list[dict]) -> dict:
    """Mean and std of each figure over the seeds."""
    row: dict = {}
    for name in SPREAD:
        values = [r[name] for r in runs]
        row[name] = statistics.mean(values)
        row[f"{name}_std"] = statistics.stdev(values) if len(values) > 1 else 0.0
    return row


@click.command()
@click.option(
    "--budget",
    "-b",
    "budgets",
    multiple=True,
    type=click.IntRange(1),
    default=(22000, 8000, 4000),
    show_default=True,
    help="Nonzero-weight budgets.",
)
@click.option(
    "--method",
    "-m",
    "methods",
    multiple=True,
    type=click.Choice(list(METHODS)),
    default=tuple(METHODS),
    show_default=True,
)
@click.option("--seeds", "-s", multiple=True, type=int, default=(0, 1, 2), show_default=True)
@click.option(
    "--out", type=click.Path(path_type=Path), default="reports/frontier.json", show_default=True
)
def main(budgets: tuple[int, ...], methods: tuple[str, ...], seeds: tuple[int, ...], out: Path):
    """Compress to each budget with each method and seed; tabulate accuracy against size."""
    default_budget = yaml.safe_load(Path("params.yaml").read_text())["compress"].get("budget")
    known = set(experiments())  # every commit's: about a minute, so read once
    plan = [(m, b) for m in methods for b in budgets if b in (METHODS[m][2] or budgets)]
    for method, budget, seed in [(m, b, s) for m, b in plan for s in seeds]:
        name = experiment_name(method, budget, seed, default_budget, known)
        if name not in known:
            run_experiment(name, method, budget, seed)
    found = experiments()
    rows = []
    for method, budget in plan:
        names = [experiment_name(method, budget, s, default_budget, known) for s in seeds]
        runs = [figures(found[name], FIGURES) for name in names]
        row = {"method": method, "budget": budget, **summarize(runs)}
        rows.append({**row, "runs": dict(zip(names, runs, strict=True))})
    described = {m: METHODS[m][0] for m in methods}
    # rows first: DVC plots the first list of records it finds
    write_json(out, {"rows": rows, "seeds": list(seeds), "cpu": cpu_name(), "methods": described})
    for row in rows:
        click.echo(
            f"{row['method']:<12} budget {row['budget']:>6,}: {row['nonzero']:>8,.0f} nonzero, "
            f"dev {100 * row['dev']:.2f} ± {100 * row['dev_std']:.2f}, "
            f"test {100 * row['test']:.2f} ± {100 * row['test_std']:.2f} % "
            f"(dense test {100 * row['dense_test']:.2f} ± {100 * row['dense_test_std']:.2f} %)"
        )


if __name__ == "__main__":
    main()
