"""Search spaces: parsing and its errors, seeded sampling, conditional params, narrowing."""

from __future__ import annotations

import math

import numpy as np
import pytest
from click.testing import CliRunner

from digits.cli import cli
from pipeline.config import read_params
from pipeline.experiments.dvc_runs import format_value
from pipeline.experiments.search_space import (
    SpaceError,
    check_values,
    parse_space,
    refine_space,
    sample_config,
    sample_value,
    trial_name,
)
from pipeline.experiments.trials import CHECKED_GROUPS
from pipeline.tools.search import leaderboard, parse_shard, plan_trials
from tests.conftest import assert_one_line_error

DEFAULTS = {
    "base": {"seed": 42},
    "model": {"dropout": 0.2, "hidden": [512, 256]},
    "train": {"optimizer": "adamw", "lr": 0.003, "momentum": 0.9, "batch_size": 128, "epochs": 15},
}
SPACE = {
    "name": "unit",
    "params": {
        "train.optimizer": {"distribution": "choice", "choices": ["sgd", "momentum", "adam"]},
        "train.lr": {"distribution": "log_uniform", "low": 1.0e-4, "high": 1.0},
        "train.momentum": {
            "distribution": "uniform",
            "low": 0.5,
            "high": 0.99,
            "when": {"train.optimizer": ["momentum"]},
        },
        "train.batch_size": {"distribution": "integer", "low": 16, "high": 256},
    },
}


def space(**changes):
    return parse_space({**SPACE, **changes}, DEFAULTS)


def test_log_uniform_samples_are_uniform_in_log_space():
    param = space().params[1]
    rng = np.random.default_rng(0)
    logs = np.log10([sample_value(param, rng) for _ in range(4000)])
    assert logs.min() >= -4 and logs.max() <= 0
    # each decade of the four gets a quarter of the draws
    counts = np.histogram(logs, bins=4, range=(-4, 0))[0] / len(logs)
    assert np.allclose(counts, 0.25, atol=0.03)


def test_integer_and_choice_draws_cover_their_range_and_nothing_else():
    params = space().params
    rng = np.random.default_rng(0)
    sizes = {sample_value(params[3], rng) for _ in range(3000)}
    assert sizes == set(range(16, 257))
    assert {sample_value(params[0], rng) for _ in range(100)} == {"sgd", "momentum", "adam"}


def test_a_conditional_param_is_set_only_when_its_condition_holds():
    configs = [sample_config(space(), i, DEFAULTS) for i in range(60)]
    for config in configs:
        assert ("train.momentum" in config) == (config["train.optimizer"] == "momentum")
    assert any("train.momentum" in c for c in configs)


def test_a_condition_on_an_unsearched_key_reads_params_yaml():
    spec = {"distribution": "uniform", "low": 0.5, "high": 0.9, "when": {"train.optimizer": "sgd"}}
    off = space(params={"train.momentum": spec})
    assert sample_config(off, 0, DEFAULTS) == {}  # params.yaml's optimizer is adamw
    on = {**DEFAULTS, "train": {**DEFAULTS["train"], "optimizer": "sgd"}}
    assert "train.momentum" in sample_config(off, 0, on)


def test_trial_i_is_the_same_whatever_the_number_of_trials():
    few = plan_trials(space(), 3, DEFAULTS)
    many = plan_trials(space(), 10, DEFAULTS)
    assert many[:3] == few
    assert len({name for name, _ in many}) == 10
    assert plan_trials(space(seed=1), 3, DEFAULTS) != few


def test_shards_split_the_trials_between_machines_without_overlap():
    shards = [plan_trials(space(), 10, DEFAULTS, (k, 3)) for k in range(3)]
    names = [name for shard in shards for name, _ in shard]
    assert sorted(names) == sorted(name for name, _ in plan_trials(space(), 10, DEFAULTS))
    assert parse_shard("1/3") == (1, 3)


def test_a_different_budget_makes_different_experiment_names():
    config = sample_config(space(), 0, DEFAULTS)
    cheap = space(budget={"train.epochs": 1})
    assert trial_name(space(), 0, config) != trial_name(cheap, 0, config)
    assert trial_name(space(), 0, config).startswith("unit-00-")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"params": {"train.nope": SPACE["params"]["train.lr"]}}, "unknown param train.nope"),
        ({"params": {"nope": SPACE["params"]["train.lr"]}}, "unknown param nope"),
        ({"budget": {"train.epoch": 1}}, "unknown param train.epoch"),
        (
            {"params": {"train.lr": {"distribution": "log_uniform", "low": 0.0, "high": 1.0}}},
            "log_uniform needs low > 0",
        ),
        (
            {"params": {"train.lr": {"distribution": "uniform", "low": 1.0, "high": 0.5}}},
            "low must be below high",
        ),
        (
            {"params": {"train.lr": {"distribution": "uniform", "low": "1e-4", "high": 0.5}}},
            "low and high must be numbers",
        ),
        (
            {"params": {"train.batch_size": {"distribution": "integer", "low": 1.5, "high": 8}}},
            "integer bounds must be integers",
        ),
        ({"params": {"train.lr": {"distribution": "normal"}}}, "distribution must be one of"),
        ({"params": {"train.lr": {"distribution": "choice", "choices": []}}}, "non-empty list"),
        ({"params": {"train.lr": {"distribution": "choice", "choice": [1]}}}, "unknown field"),
        ({"params": {}}, "at least one key"),
        ({"trials": 0}, "trials must be an integer >= 1"),
        ({"name": "a b"}, "name must be letters"),
        ({"colour": "red"}, "unknown field colour"),
        (
            {"params": dict(reversed(list(SPACE["params"].items())))},
            "list train.optimizer before it",
        ),
    ],
)
def test_bad_spaces_are_refused_naming_the_problem(change, message):
    with pytest.raises(SpaceError, match=message):
        space(**change)


def test_bounds_outside_what_a_param_accepts_fail_before_any_run():
    defaults = read_params()
    bad = {"train.momentum": {"distribution": "uniform", "low": 0.5, "high": 1.5}}
    with pytest.raises(SpaceError, match=r"train.momentum must be in \[0, 1\)"):
        check_values(parse_space({**SPACE, "params": bad}, defaults), defaults, CHECKED_GROUPS)
    check_values(parse_space(SPACE, defaults), defaults, CHECKED_GROUPS)  # the good one passes


def test_refine_narrows_log_params_in_log_space_and_keeps_the_top_choices():
    top = [
        {"train.optimizer": "adam", "train.lr": 1e-3, "train.batch_size": 64},
        {"train.optimizer": "sgd", "train.lr": 1e-2, "train.batch_size": 96},
    ]
    fine = refine_space(space(), top, "unit-fine", margin=0.25)
    by_key = {p.key: p for p in fine.params}
    assert by_key["train.lr"].low == pytest.approx(10**-3.25, rel=1e-3)
    assert by_key["train.lr"].high == pytest.approx(10**-1.75, rel=1e-3)
    assert by_key["train.optimizer"].choices == ("sgd", "adam")  # the coarse order kept
    assert (by_key["train.batch_size"].low, by_key["train.batch_size"].high) == (56, 104)
    assert by_key["train.momentum"] == space().params[2]  # no top trial used it
    assert fine.name == "unit-fine" and fine.seed == space().seed + 1


def test_refine_stays_inside_the_coarse_bounds_and_keeps_integer_bounds_apart():
    top = [{"train.optimizer": "sgd", "train.lr": 0.9, "train.batch_size": 256}] * 2
    fine = {p.key: p for p in refine_space(space(), top, "f").params}
    assert fine["train.lr"].high == 1.0 and fine["train.lr"].low < 0.9
    # one value: a quarter of the coarse range on each side, clipped at the coarse bound
    assert (fine["train.batch_size"].low, fine["train.batch_size"].high) == (196, 256)
    tight = {p.key: p for p in refine_space(space(), top, "f", margin=0).params}
    assert (tight["train.batch_size"].low, tight["train.batch_size"].high) == (255, 256)


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (1e-05, "1.0e-05"),
        (0.003, "0.003"),
        (1.5e-07, "1.5e-07"),
        (True, "true"),
        ([512, 256], "[512, 256]"),
        ("adam", '"adam"'),
    ],
)
def test_values_are_written_as_yaml_that_reads_back_the_same(value, text):
    from pipeline.config import load_yaml

    assert format_value(value) == text
    assert load_yaml(f"x: {text}")["x"] == value


def test_params_files_read_floats_as_dvc_writes_them():
    from pipeline.config import load_yaml

    assert load_yaml("lr: 1e-05\nn: 10\nw: -2E3") == {"lr": 1e-05, "n": 10, "w": -2000.0}


def test_the_leaderboard_ranks_by_dev_accuracy_then_dev_loss():
    from pipeline.experiments.dvc_runs import Experiment

    def exp(name, accuracy, loss):
        figures = {"reports/train.json": {"dev_accuracy": accuracy, "dev_loss": loss}}
        return Experiment(name, "0" * 40, {}, figures)

    plan = [("a", {}), ("b", {}), ("c", {}), ("missing", {})]
    found = {"a": exp("a", 0.9, 0.3), "b": exp("b", 0.95, 0.2), "c": exp("c", 0.9, 0.1)}
    assert [row["name"] for row in leaderboard(plan, found)] == ["b", "c", "a"]
    assert not math.isnan(leaderboard(plan, found)[0]["dev_loss"])


def test_the_search_command_refuses_a_missing_space_file(tmp_path):
    result = CliRunner().invoke(cli, ["search", "--space", str(tmp_path / "none.yaml")])
    assert_one_line_error(result, "cannot read search space")


def test_refine_keeps_list_choices_the_top_trials_used():
    hidden = {"distribution": "choice", "choices": [[128], [512, 256], [256, 256]]}
    wide = parse_space({**SPACE, "params": {"model.hidden": hidden}}, DEFAULTS)
    top = [{"model.hidden": [512, 256]}, {"model.hidden": [128]}]  # as the leaderboard holds them
    [fine] = refine_space(wide, top, "f").params
    assert fine.choices == ((128,), (512, 256))
    assert format_value(sample_config(wide, 0, DEFAULTS)["model.hidden"]).startswith("[")
