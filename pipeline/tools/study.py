"""`digits study NAME`: a comparison study, every variant over seeds, each run a DVC experiment.

Reads: the study's definition (pipeline.experiments.studies), params.yaml (to check every
setting before anything runs), the repo's DVC experiments (`dvc exp show`; learning curves from each
experiment's commit). Runs each missing (variant, seed) as `dvc exp run --temp -n <name> -S ...
train`, one after another; runs already there (by name) are skipped, so a rerun continues.
Writes: reports/studies/<name>.md (table: mean ± std over seeds, Welch's t-test against the
best), <name>.json (every run's figures), <name>.png (dev curves per variant).
Run: `digits study optimizers [-s 42 -s 1 -s 2] [-S train.epochs=5]`; `digits study winner`
compares the search's best trial (reports/search/coarse-fine.json) with the defaults.
"""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path
from typing import Any

import click

from digits.atomic import atomic_path, write_json
from pipeline.config import load_yaml, read_params
from pipeline.experiments.dvc_runs import (
    Experiment,
    experiments,
    read_at,
    run_missing,
    stage_seconds,
)
from pipeline.experiments.search_space import SpaceError, check_config, lookup
from pipeline.experiments.studies import (
    SEEDS,
    STUDIES,
    Study,
    parse_curve,
    run_config,
    run_name,
    summarize,
    table_markdown,
    winner_study,
    write_figure,
)
from pipeline.experiments.trials import CHECKED_GROUPS, DEV_METRICS
from pipeline.options import path_option

CURVES = {"accuracy": "dvclive/plots/metrics/dev/accuracy.tsv"}
CURVES["loss"] = "dvclive/plots/metrics/dev/loss.tsv"
Run = tuple[str, int, str, dict[str, Any]]  # variant, seed, experiment name, -S settings


def plan_runs(study: Study, seeds: tuple[int, ...], common: dict[str, Any]) -> list[Run]:
    """Every (variant, seed) of the study, seed-major so an early stop has every variant once."""
    return [
        (
            variant,
            seed,
            run_name(study, variant, seed, common),
            run_config(study, variant, seed, common),
        )
        for seed in seeds
        for variant in study.variants
    ]


def check_runs(runs: list[Run], defaults: dict[str, Any]) -> None:
    """Every key is a params.yaml key and every value passes its group's checks."""
    for _, _, _, config in runs:
        for key in config:
            lookup(defaults, key)
        check_config(config, defaults, CHECKED_GROUPS)


def parse_sets(sets: tuple[str, ...]) -> dict[str, Any]:
    """`-S key=value` pairs (values read as YAML, as DVC reads them)."""
    out = {}
    for item in sets:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"must be key=value, got {item!r}", param_hint="-S")
        out[key] = load_yaml(value)
    return out


def collect(runs: list[Run], found: dict[str, Experiment]) -> tuple[dict, dict]:
    """Per variant: each finished seed's figures, and its dev curves read from its commit."""
    figures: dict[str, list[dict]] = {}
    curves: dict[str, dict[str, list[list[float]]]] = {}
    for variant, seed, name, _ in runs:
        if name not in found:
            continue
        final = found[name].metrics.get(DEV_METRICS, {})
        row = {k: final.get(k) for k in ("dev_accuracy", "dev_loss", "train_loss")}
        figures.setdefault(variant, []).append({"seed": seed, "name": name, **row,
                                                "seconds": stage_seconds(name)})  # fmt: skip
        for metric, path in CURVES.items():
            values = parse_curve(read_at(found[name].rev, path))
            curves.setdefault(variant, {}).setdefault(metric, []).append(values)
    return figures, curves


def resolve_study(name: str, leaderboard: Path) -> Study:
    """A named study, or `winner` built from a search's leaderboard."""
    if name == "winner":
        try:
            return winner_study(json.loads(leaderboard.read_text()))
        except (OSError, ValueError, KeyError, IndexError):
            raise click.ClickException(
                f"study winner needs a search leaderboard with trials: {leaderboard}"
            ) from None
    if name not in STUDIES:
        known = ", ".join([*STUDIES, "winner"])
        raise click.BadParameter(f"unknown study {name!r} (known: {known})", param_hint="NAME")
    return STUDIES[name]


@click.command("study")
@click.argument("name")
@path_option(
    "--out", default="reports/studies", help="Tables and figures go here.", file_okay=False
)
@path_option(
    "--leaderboard",
    default="reports/search/coarse-fine.json",
    help="winner: the search leaderboard whose best trial it takes.",
    dir_okay=False,
)
@click.option("--seed", "-s", "seeds", multiple=True, type=int, help="base.seed values [42 1 2].")
@click.option("--set", "-S", "sets", multiple=True, help="key=value for every run (a budget).")
@click.option("--target", default="train", show_default=True, help="Stage to run up to (all: all).")
def study_command(
    name: str, out: Path, leaderboard: Path, seeds: tuple[int, ...],
    sets: tuple[str, ...], target: str,
) -> None:  # fmt: skip
    """Run a comparison study over seeds; table of mean ± std, Welch's t-test against the best.

    NAME: optimizers, activations, initializations, preprocessing, regularization, batchnorm,
    depth-width, or winner (the search's best trial against the defaults).
    """
    study = resolve_study(name, leaderboard)
    seeds = seeds or SEEDS
    common = parse_sets(sets)
    runs = plan_runs(study, seeds, common)
    try:
        check_runs(runs, read_params())  # DVC runs every experiment with params.yaml
    except SpaceError as err:
        raise click.ClickException(err.message.replace("search space: ", "study: ")) from None
    try:
        named = [(run, config) for _, _, run, config in runs]
        failed = run_missing(named, None if target == "all" else target, "runs")
    except KeyboardInterrupt:
        click.echo("interrupted: finished runs are kept; rerun the command to continue", err=True)
        sys.exit(130)
    figures, curves = collect(runs, experiments())
    if not figures:
        raise click.ClickException(f"study {study.name}: no finished runs to summarize")
    rows = summarize(figures)
    options = [arg for seed in seeds for arg in ("-s", str(seed))]
    options += [arg for item in sets for arg in ("-S", item)]
    command = shlex.join(["digits", "study", name, *options])
    text = table_markdown(study, rows, command, [runs[0]["name"] for runs in figures.values()])
    write_json(out / f"{study.name}.json", {"command": command, "rows": rows, "runs": figures})
    write_figure(out / f"{study.name}.png", study.name, curves)
    with atomic_path(out / f"{study.name}.md") as tmp:
        tmp.write_text(text)
    click.echo(text)
    if failed:
        raise click.ClickException(f"{len(failed)} runs failed (a rerun retries them): {failed}")
