"""Named DVC experiments: run one (`dvc exp run --temp`), read them all back (`dvc exp show`).

Search and studies run every trial through here, and the seed and compression benchmarks read
their figures through here. An experiment's stage timings go to a run log outside DVC
(<logs>/experiments/<name>/), since a timing is no DVC output. Writes nothing else itself.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from pipeline.run_log import logs_dir


class ExperimentError(click.ClickException):
    """A `dvc exp` or `git` command failed; the message holds the end of its output."""


@dataclass(frozen=True)
class Experiment:
    """One named experiment as `dvc exp show` lists it."""

    name: str
    rev: str
    params: dict[str, Any]  # params.yaml, nested by group
    metrics: dict[str, dict]  # metrics file -> its figures


def run_command(command: list[str], cwd: Path | None = None) -> str:
    """Run a dvc or git command; its stdout, or an ExperimentError with the end of stderr."""
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        raise ExperimentError(f"{' '.join(command[:3])} failed: {' / '.join(tail)}")
    return done.stdout


def baselines(cwd: Path | None = None) -> list[str]:
    """The commits experiments were run on, from DVC's refs (refs/exps/<sha[:2]>/<sha[2:]>/...)."""
    refs = run_command(["git", "for-each-ref", "--format=%(refname)", "refs/exps"], cwd).split()
    parts = [ref.split("/") for ref in refs]
    return sorted({p[2] + p[3] for p in parts if len(p) == 5 and len(p[2] + p[3]) == 40})


def experiments(cwd: Path | None = None) -> dict[str, Experiment]:
    """Every named experiment of every commit, by name."""
    # Every commit's experiments: the ones of earlier commits count while the stages are the same.
    # Only the commits that have some: `--all-commits` reads every commit's params and metrics,
    # about a minute on this repo's history.
    revs = baselines(cwd)
    if not revs:
        return {}
    command = ["dvc", "exp", "show", "--json", *(arg for rev in revs for arg in ("--rev", rev))]
    shown = run_command(command, cwd)
    found = {}
    for row in json.loads(shown.splitlines()[0]) if shown.strip() else []:
        for exp in row.get("experiments") or []:
            rev = exp["revs"][0]
            data = rev.get("data") or {}
            if not exp.get("name") or rev.get("error"):
                continue
            params = (data.get("params") or {}).get("params.yaml", {}).get("data", {})
            metrics = {path: m.get("data", {}) for path, m in (data.get("metrics") or {}).items()}
            found[exp["name"]] = Experiment(exp["name"], rev["rev"], params, metrics)
    return found


def format_value(value: Any) -> str:
    """A param value as `-S key=value` writes it: YAML that reads back as the same type."""
    if isinstance(value, float):
        text = repr(value)
        mantissa, e, exponent = text.partition("e")
        # YAML 1.1 (PyYAML, our config reader) reads `1e-05` as a string: it needs the dot.
        return f"{mantissa}.0e{exponent}" if e and "." not in mantissa else text
    if isinstance(value, list | tuple):
        return "[" + ", ".join(format_value(v) for v in value) + "]"
    return json.dumps(value)


def set_args(config: dict[str, Any]) -> list[str]:
    """`-S key=value` arguments for `dvc exp run`."""
    return [arg for key, value in config.items() for arg in ("-S", f"{key}={format_value(value)}")]


def run_log_dir(name: str) -> Path:
    """Where one experiment's stages write their run logs (seconds)."""
    return (logs_dir() / "experiments" / name).absolute()


def run_experiment(name: str, config: dict[str, Any], target: str | None = None) -> None:
    """Run one named experiment in a temp copy of the repo; Ctrl-C leaves no part of it."""
    command = ["dvc", "exp", "run", "--temp", "-n", name, *set_args(config)]
    command += [target] if target else []
    env = {**os.environ, "DIGITS_LOGS": str(run_log_dir(name))}
    # Its own session: a terminal Ctrl-C reaches only us, and we pass it on once to all of
    # DVC's processes, then wait while DVC drops its temp copy: no half-written experiment.
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
        start_new_session=True,
    ) as proc:  # fmt: skip
        try:
            output, _ = proc.communicate()
        except KeyboardInterrupt:
            os.killpg(proc.pid, signal.SIGINT)
            proc.wait()
            raise
    if proc.returncode != 0:
        tail = output.strip().splitlines()[-3:]
        raise ExperimentError(f"experiment {name} failed: {' / '.join(tail)}")


def describe(config: dict[str, Any]) -> str:
    """key=value pairs of a run's settings, floats to 4 significant digits."""
    return " ".join(
        f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in config.items()
    )


def run_missing(runs: list[tuple[str, dict[str, Any]]], target: str | None, what: str) -> list[str]:
    """Run, in order, each (name, settings) that is not an experiment yet; the names that failed.

    A failed run is reported and passed over (a rerun retries it); Ctrl-C propagates once DVC
    has dropped the interrupted run.
    """
    done = set(experiments())
    todo = [(name, config) for name, config in runs if name not in done]
    click.echo(f"{len(runs) - len(todo)} of {len(runs)} {what} already run; running {len(todo)}")
    failed = []
    for count, (name, config) in enumerate(todo, 1):
        started = time.perf_counter()
        click.echo(f"[{count}/{len(todo)}] {name}: {describe(config)}")
        try:
            run_experiment(name, config, target)
        except ExperimentError as err:
            click.echo(f"    failed: {err.message}")
            failed.append(name)
            continue
        click.echo(f"    done in {time.perf_counter() - started:.0f} s")
    return failed


def stage_seconds(name: str, stage: str = "train") -> float | None:
    """A stage's seconds in an experiment run here, from its run log (None when not run here)."""
    path = run_log_dir(name) / f"{stage}.json"
    try:
        return float(json.loads(path.read_text())["seconds"])
    except (OSError, ValueError, KeyError):
        return None


def read_at(rev: str, path: str, cwd: Path | None = None) -> str:
    """A file's text as an experiment's commit holds it (metrics and plots live in git)."""
    return run_command(["git", "show", f"{rev}:{path}"], cwd)
