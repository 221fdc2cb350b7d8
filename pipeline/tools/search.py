"""`digits search`: random search over search.yaml, each trial a named DVC experiment.

Reads: search.yaml (the space), params.yaml (defaults, to check keys and bounds), the repo's
DVC experiments (`dvc exp show`). Runs each missing trial as `dvc exp run --temp -n <name>
-S ... train` (fetch, prepare, train: the stages that make dev accuracy), one after another.
Writes: reports/search/<name>.{json,md} (the leaderboard, ranked by dev accuracy from
reports/train.json, never test) and, with --refine, reports/search/<name>-fine.yaml (the space
narrowed around the top-k trials, then searched). Trials already run (by name) are skipped, so
rerunning after Ctrl-C continues.
Run: `digits search [--space search.yaml] [--trials N] [--refine]`
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from digits.atomic import atomic_path, write_json
from pipeline.config import read_params
from pipeline.experiments.dvc_runs import Experiment, experiments, run_missing, stage_seconds
from pipeline.experiments.search_space import (
    Config,
    SearchSpace,
    check_config,
    check_values,
    read_space,
    refine_space,
    sample_config,
    thaw,
    trial_name,
    write_space,
)
from pipeline.experiments.trials import CHECKED_GROUPS, DEV_METRICS
from pipeline.options import path_option


def plan_trials(
    space: SearchSpace, trials: int, defaults: dict[str, Any], shard: tuple[int, int] = (0, 1)
) -> list[tuple[str, Config]]:
    """(name, config) of trials 0..trials-1 that fall in this shard (index % count == shard)."""
    plan = []
    for index in range(trials):
        config = sample_config(space, index, defaults)
        if index % shard[1] == shard[0]:
            plan.append((trial_name(space, index, config), config))
    return plan


def leaderboard(
    plan: list[tuple[str, Config]], found: dict[str, Experiment]
) -> list[dict[str, Any]]:
    """The planned trials that have run, best dev accuracy first (ties: lower dev loss)."""
    rows = []
    for name, config in plan:
        if name not in found:
            continue
        figures = found[name].metrics.get(DEV_METRICS, {})
        rows.append(
            {
                "name": name,
                "dev_accuracy": figures.get("dev_accuracy"),
                "dev_loss": figures.get("dev_loss"),
                "train_loss": figures.get("train_loss"),
                "seconds": stage_seconds(name),
                "config": thaw(config),
            }
        )
    return sorted(rows, key=lambda r: (-(r["dev_accuracy"] or 0), r["dev_loss"] or float("inf")))


def format_cell(value: Any) -> str:
    """A leaderboard cell: 4 significant digits for floats, lists as written in params.yaml."""
    if isinstance(value, float):
        return f"{value:.4g}"
    if value is None:
        return "—"
    return str(value)


def leaderboard_markdown(space: SearchSpace, rows: list[dict[str, Any]]) -> str:
    """The leaderboard as a markdown table, one column per searched param."""
    keys = [p.key for p in space.params]
    head = ["rank", "experiment", "dev acc", "dev loss", "train loss", "s", *keys]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for rank, row in enumerate(rows, 1):
        cells = [str(rank), row["name"], f"{100 * row['dev_accuracy']:.2f} %"]
        cells += [format_cell(row[k]) for k in ("dev_loss", "train_loss", "seconds")]
        cells += [format_cell(row["config"].get(k)) for k in keys]
        lines.append("| " + " | ".join(cells) + " |")
    budget = ", ".join(f"{k}={format_cell(v)}" for k, v in space.budget) or "params.yaml's"
    return f"Search `{space.name}`, budget {budget}; ranked by dev accuracy.\n\n" + "\n".join(lines)


def bounds_lines(coarse: SearchSpace, fine: SearchSpace) -> list[str]:
    """One line per param: its coarse and narrowed bounds or choices."""
    lines = []
    for old, new in zip(coarse.params, fine.params, strict=True):
        if old.distribution == "choice":
            before, after = list(thaw(old.choices)), list(thaw(new.choices))
        else:
            before, after = [old.low, old.high], [new.low, new.high]
        lines.append(f"{old.key} ({old.distribution}): {before} -> {after}")
    return lines


def refine_round(
    space: SearchSpace, defaults: dict[str, Any], out: Path, top_k: int
) -> tuple[SearchSpace, list[str]]:
    """The coarse round's top-k -> the fine space, written to <out>/<name>-fine.yaml."""
    coarse = leaderboard(plan_trials(space, space.trials, defaults), experiments())
    if len(coarse) < top_k:
        raise click.ClickException(
            f"--refine needs {top_k} finished trials of {space.name}, found {len(coarse)}: "
            "run the coarse search first"
        )
    top = [row["config"] for row in coarse[:top_k]]
    fine = refine_space(space, top, f"{space.name}-fine")
    lines = bounds_lines(space, fine)
    note = f"{fine.name}: {space.name} narrowed around its top {top_k} by dev accuracy\n"
    write_space(out / f"{fine.name}.yaml", fine, note + "\n".join(lines))
    return fine, lines


def parse_shard(value: str) -> tuple[int, int]:
    """`K/N` -> (K, N): this machine runs trials whose index % N == K."""
    try:
        index, total = (int(part) for part in value.split("/"))
    except ValueError:
        raise click.BadParameter(f"must be K/N, got {value!r}", param_hint="--shard") from None
    if not 0 <= index < total:
        raise click.BadParameter(f"needs 0 <= K < N, got {value}", param_hint="--shard")
    return index, total


def write_leaderboard(out: Path, space: SearchSpace, rows: list[dict[str, Any]]) -> None:
    """reports/search/<name>.json and .md."""
    write_json(out / f"{space.name}.json", {"space": thaw(space.as_yaml()), "trials": rows})
    with atomic_path(out / f"{space.name}.md") as tmp:
        tmp.write_text(leaderboard_markdown(space, rows) + "\n")


@click.command("search")
@path_option("--space", "space_file", default="search.yaml", help="Search space.", dir_okay=False)
@path_option("--out", default="reports/search", help="Leaderboards go here.", file_okay=False)
@click.option("--trials", type=click.IntRange(min=0), help="Trials (default: the space's).")
@click.option("--refine", is_flag=True, help="Narrow the space around the top-k, then search it.")
@click.option("--top-k", type=click.IntRange(min=1), help="Trials --refine narrows around.")
@click.option("--shard", default="0/1", show_default=True, help="K/N: run every N-th trial from K.")
@click.option("--target", default="train", show_default=True, help="Stage to run up to (all: all).")
def search_command(
    space_file: Path, out: Path, trials: int | None, refine: bool,
    top_k: int | None, shard: str, target: str,
) -> None:  # fmt: skip
    """Random search: each trial a named DVC experiment; leaderboard ranked by dev accuracy."""
    shard_of = parse_shard(shard)
    defaults = read_params()  # DVC runs every experiment with params.yaml
    space = read_space(space_file, defaults)
    check_values(space, defaults, CHECKED_GROUPS)
    if refine:
        space, lines = refine_round(space, defaults, out, top_k or space.top_k)
        click.echo("narrowed bounds:\n  " + "\n  ".join(lines))
    plan = plan_trials(space, space.trials if trials is None else trials, defaults, shard_of)
    for _, config in plan:
        check_config({**dict(space.budget), **config}, defaults, CHECKED_GROUPS)
    runs = [(name, {**dict(space.budget), **config}) for name, config in plan]
    try:
        failed = run_missing(runs, None if target == "all" else target, "trials")
    except KeyboardInterrupt:
        click.echo("interrupted: finished trials are kept; rerun the command to continue", err=True)
        sys.exit(130)
    rows = leaderboard(plan, experiments())
    write_leaderboard(out, space, rows)
    click.echo(leaderboard_markdown(space, rows))
    if rows:
        click.echo(f"best: {rows[0]['name']} (`dvc exp apply {rows[0]['name']}`, `dvc repro`)")
    if failed:
        raise click.ClickException(f"{len(failed)} trials failed (a rerun retries them): {failed}")
