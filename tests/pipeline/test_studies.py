"""Comparison studies: every definition valid against params.yaml, seed statistics, verdicts."""

from __future__ import annotations

import math
import statistics
import subprocess

import pytest
from click.testing import CliRunner
from scipy import stats

from digits.cli import cli
from pipeline.config import read_params
from pipeline.experiments.studies import (
    SEEDS,
    STUDIES,
    run_name,
    summarize,
    table_markdown,
    welch_p,
    winner_study,
)
from pipeline.tools.study import check_runs, plan_runs
from tests.conftest import assert_one_line_error


@pytest.mark.parametrize("name", sorted(STUDIES))
def test_every_study_sets_only_known_params_to_valid_values(name):
    runs = plan_runs(STUDIES[name], SEEDS, {})
    check_runs(runs, read_params())  # raises on an unknown key or a bad value
    assert len(runs) == len(STUDIES[name].variants) * 3
    assert len({run[2] for run in runs}) == len(runs)  # one experiment name per run


def test_the_studies_cover_what_the_issue_names():
    variants = {name: set(study.variants) for name, study in STUDIES.items()}
    assert variants["optimizers"] == {
        "sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam", "adamw",
    }  # fmt: skip
    assert variants["preprocessing"] == {"none", "unit", "standardize", "pca", "zca"}
    assert variants["regularization"] == {"none", "l2", "l1", "dropout", "early-stopping"}
    assert "small_normal" in variants["initializations"]
    assert variants["batchnorm"] == {"on", "off"}
    assert len(variants["depth-width"]) == 6
    assert variants["residual"] == {"d6-plain", "d6-skip", "d10-plain", "d10-skip"}
    assert variants["noisy-relu"] == {"relu", "noisy"} and "noisy_relu" in variants["activations"]
    assert variants["max-norm"] == {"none", "c3"}


def test_experiment_names_are_valid_git_refs_and_change_with_the_budget():
    study = STUDIES["depth-width"]
    name = run_name(study, "d2-w512", 42, {})
    assert name.startswith("depth-width-d2-w512-s42-")
    ok = subprocess.run(["git", "check-ref-format", f"refs/exps/{name}"], capture_output=True)
    assert ok.returncode == 0
    assert run_name(study, "d2-w512", 42, {"train.epochs": 3}) != name


def test_welch_p_matches_the_textbook_formula():
    a, b = [0.981, 0.984, 0.979], [0.975, 0.977, 0.972]
    va, vb = statistics.variance(a) / 3, statistics.variance(b) / 3
    t = (statistics.mean(a) - statistics.mean(b)) / math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va**2 / 2 + vb**2 / 2)  # Welch-Satterthwaite
    assert welch_p(a, b) == pytest.approx(2 * stats.t.sf(abs(t), df), rel=1e-9)


def test_identical_runs_are_no_difference_and_a_single_seed_cannot_be_judged():
    assert welch_p([0.98, 0.98], [0.98, 0.98]) == 1.0
    assert welch_p([0.98, 0.98], [0.97, 0.97]) == 0.0  # no spread at all: a sure difference
    assert math.isnan(welch_p([0.98], [0.97, 0.96]))


def test_a_variant_inside_the_seed_noise_is_not_called_worse():
    runs = {
        "a": [
            {"dev_accuracy": v, "train_loss": 0.1, "dev_loss": 0.2} for v in (0.980, 0.985, 0.975)
        ],
        "b": [
            {"dev_accuracy": v, "train_loss": 0.1, "dev_loss": 0.2} for v in (0.979, 0.984, 0.976)
        ],
        "c": [
            {"dev_accuracy": v, "train_loss": 0.1, "dev_loss": 0.2} for v in (0.900, 0.901, 0.899)
        ],
    }
    rows = {row["variant"]: row for row in summarize(runs)}
    assert rows["a"]["verdict"] == "best"
    assert rows["b"]["verdict"].startswith("within noise")
    assert rows["c"]["verdict"].startswith("worse")
    assert rows["a"]["dev_accuracy"] == pytest.approx([0.98, 0.005])
    assert rows["a"]["seconds"] is None  # not timed here (pulled from another machine)
    table = table_markdown(STUDIES["batchnorm"], summarize(runs), "digits study x")
    assert "| a | 3 | 98.00 ± 0.50 |" in table and "| 0.1000 ± 0.0000 |" in table


def test_the_winner_study_sets_the_best_trials_params_over_the_defaults():
    board = {"trials": [{"name": "coarse-fine-03-abc", "config": {"train.lr": 0.01}}]}
    study = winner_study(board)
    assert study.variants == {"defaults": {}, "winner": {"train.lr": 0.01}}
    assert "coarse-fine-03-abc" in study.description


def test_an_unknown_study_is_refused_in_one_line():
    result = CliRunner().invoke(cli, ["study", "colours"])
    assert_one_line_error(result, "unknown study 'colours'", code=2)


def test_a_bad_set_value_is_refused_before_anything_runs():
    result = CliRunner().invoke(cli, ["study", "batchnorm", "-S", "train.epochs=0"])
    assert_one_line_error(result, "train.epochs must be >= 1")
    result = CliRunner().invoke(cli, ["study", "batchnorm", "-S", "train.epoch=3"])
    assert_one_line_error(result, "unknown param train.epoch")
