"""Search and studies run by the real DVC and git on tiny fixture data in scratch repositories."""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import commit, offline_mnist_env, run

ROOT = Path(__file__).resolve().parents[1]
# One epoch of a tiny net: the search's machinery is under test here, not the network.
TINY = {
    "model": {"hidden": [16], "dropout": 0.0},
    "train": {"epochs": 1, "batch_size": 100, "augment": False},
}
SPACE = {
    "name": "tiny",
    "seed": 0,
    "trials": 4,
    "top_k": 2,
    "budget": {"train.subset": 0.5},
    "params": {
        "train.optimizer": {"distribution": "choice", "choices": ["sgd", "momentum", "adam"]},
        "train.lr": {"distribution": "log_uniform", "low": 1.0e-4, "high": 1.0},
        "train.momentum": {
            "distribution": "uniform",
            "low": 0.5,
            "high": 0.99,
            "when": {"train.optimizer": ["momentum"]},
        },
        "train.batch_size": {"distribution": "integer", "low": 50, "high": 200},
    },
}


@pytest.fixture(scope="module")
def search_repo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """A git+DVC repo with the project's pipeline, tiny params and data trained once (train)."""
    repo = tmp_path_factory.mktemp("search-repo")
    for name in ("params.yaml", ".gitignore", ".dvcignore"):
        shutil.copy(ROOT / name, repo / name)
    # The pipeline up to train, all a trial runs: later stages would only slow the fixture down.
    pipeline = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    stages = {name: pipeline["stages"][name] for name in ("fetch", "prepare", "train")}
    (repo / "dvc.yaml").write_text(yaml.safe_dump({"stages": stages}, sort_keys=False))
    for package in ("digits", "pipeline", "serving"):  # the stages' deps
        shutil.copytree(
            ROOT / package, repo / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    params = yaml.safe_load((repo / "params.yaml").read_text())
    for group, values in TINY.items():
        params[group].update(values)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (repo / "search.yaml").write_text(yaml.safe_dump(SPACE, sort_keys=False))
    env = {
        **offline_mnist_env(tmp_path_factory, n_train=500, n_test=100),
        "DIGITS_LOGS": str(tmp_path_factory.mktemp("logs")),
        # The code under test, wherever DVC runs a stage (temp experiment copies included).
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        "OMP_NUM_THREADS": "1",
    }
    run(["git", "init", "-q"], repo, env)
    run(["dvc", "init", "-q"], repo, env)
    shutil.copy(ROOT / ".dvc" / "config", repo / ".dvc" / "config")
    commit(repo, env, "scratch")  # dvclive reads the current commit
    run(["dvc", "repro", "train"], repo, env)
    commit(repo, env, "baseline")
    return repo, env


def digits(args: list[str], repo: Path, env: dict[str, str]) -> str:
    """Run `digits ...` in the repo (the code under test, through PYTHONPATH)."""
    return run(["digits", *args], repo, env)


def shown(repo: Path, env: dict[str, str]) -> dict[str, dict]:
    """`dvc exp show --json` of the repo's experiments, by name: params and metrics."""
    rows = json.loads(run(["dvc", "exp", "show", "--json"], repo, env).splitlines()[0])
    found = {}
    for row in rows:
        for exp in row.get("experiments") or []:
            data = exp["revs"][0]["data"]
            found[exp["name"]] = {
                "params": data["params"]["params.yaml"]["data"],
                "train": data["metrics"]["reports/train.json"]["data"],
            }
    return found


def setting(params: dict, key: str):
    group, name = key.split(".")
    return params[group][name]


@pytest.fixture(scope="module")
def searched(search_repo) -> tuple[Path, dict[str, str], str, dict]:
    """The 4-trial search run once: repo, env, its output and its leaderboard JSON."""
    repo, env = search_repo
    output = digits(["search"], repo, env)
    board = json.loads((repo / "reports" / "search" / "tiny.json").read_text())
    return repo, env, output, board


@pytest.mark.slow
def test_a_search_runs_each_trial_as_a_named_dvc_experiment_with_its_params(searched):
    repo, env, _, board = searched
    trials = board["trials"]
    assert len(trials) == 4
    experiments = shown(repo, env)
    for trial in trials:
        assert trial["name"] in experiments, sorted(experiments)
        params = experiments[trial["name"]]["params"]
        for key, value in trial["config"].items():
            assert setting(params, key) == value, key
        assert params["train"]["subset"] == 0.5  # the budget, fixed for every trial
        # momentum is sampled only for the momentum optimizer; elsewhere params.yaml's stays
        assert ("train.momentum" in trial["config"]) == (params["train"]["optimizer"] == "momentum")
        if "train.momentum" not in trial["config"]:
            assert params["train"]["momentum"] == 0.9
    lrs = [t["config"]["train.lr"] for t in trials]
    assert len(set(lrs)) == 4 and all(1e-4 <= lr <= 1.0 for lr in lrs)


@pytest.mark.slow
def test_the_leaderboard_ranks_trials_by_their_dev_accuracy(searched):
    repo, env, output, board = searched
    experiments = shown(repo, env)
    accuracies = [t["dev_accuracy"] for t in board["trials"]]
    assert accuracies == sorted(accuracies, reverse=True)
    for trial in board["trials"]:
        assert trial["dev_accuracy"] == experiments[trial["name"]]["train"]["dev_accuracy"]
        assert trial["seconds"] > 0  # the train stage's own run log, outside DVC
    best = board["trials"][0]["name"]
    assert f"| 1 | {best} | {100 * accuracies[0]:.2f} % |" in output
    table = (repo / "reports" / "search" / "tiny.md").read_text()
    assert table.index(best) < table.index(board["trials"][-1]["name"])
    assert "test_accuracy" not in json.dumps(board)  # ranked by dev, test is never read


@pytest.mark.slow
def test_a_rerun_runs_no_trial_twice_even_on_a_later_commit(searched):
    repo, env, _, board = searched
    (repo / "NOTES.md").write_text("a commit after the search\n")
    commit(repo, env, "notes")  # the trials' baseline is now an earlier commit
    again = digits(["search"], repo, env)
    assert "4 of 4 trials already run; running 0" in again
    assert board["trials"][0]["name"] in again


@pytest.mark.slow
def test_refine_narrows_each_param_around_the_top_trials(searched):
    repo, env, _, board = searched
    output = digits(["search", "--refine", "--trials", "1"], repo, env)
    fine = yaml.safe_load((repo / "reports" / "search" / "tiny-fine.yaml").read_text())
    top = [t["config"] for t in board["trials"][:2]]  # top_k: 2
    coarse = SPACE["params"]
    for key, spec in fine["params"].items():
        values = [c[key] for c in top if key in c]
        if not values:  # no top trial used it: the whole coarse range stays
            assert spec == coarse[key]
        elif spec["distribution"] == "choice":
            assert set(spec["choices"]) == set(values)
        else:
            old = coarse[key]
            assert old["low"] <= spec["low"] <= min(values) <= max(values) <= spec["high"]
            assert spec["high"] <= old["high"]
        assert f"{key} ({spec['distribution']}):" in output
    # lr, log-uniform: the top trials' span in log space, a quarter of it added on each side
    low, high = sorted(math.log(c["train.lr"]) for c in top)
    pad = (high - low) / 4
    expected = [max(1e-4, math.exp(low - pad)), min(1.0, math.exp(high + pad))]
    assert [fine["params"]["train.lr"][k] for k in ("low", "high")] == pytest.approx(expected, 1e-3)
    [trial] = json.loads((repo / "reports" / "search" / "tiny-fine.json").read_text())["trials"]
    assert trial["name"].startswith("tiny-fine-00-") and trial["name"] in shown(repo, env)
    lr = fine["params"]["train.lr"]
    assert lr["low"] <= trial["config"]["train.lr"] <= lr["high"]


@pytest.mark.slow
def test_bad_search_spaces_fail_with_one_line_and_run_nothing(search_repo, tmp_path: Path):
    repo, env = search_repo
    before = set(shown(repo, env))
    bad = {
        "unknown param train.nope": {
            "train.nope": {"distribution": "uniform", "low": 0, "high": 1}
        },
        "low must be below high": {
            "train.lr": {"distribution": "log_uniform", "low": 1.0, "high": 0.1}
        },
        "train.momentum must be in [0, 1)": {
            "train.momentum": {"distribution": "uniform", "low": 0.5, "high": 1.5}
        },
    }
    for message, params in bad.items():
        space = tmp_path / "bad.yaml"
        space.write_text(yaml.safe_dump({**SPACE, "name": "bad", "params": params}))
        result = subprocess.run(
            ["digits", "search", "--space", str(space)], cwd=repo, env=env, capture_output=True,
            text=True,
        )  # fmt: skip
        assert result.returncode == 1, result.stderr
        assert result.stderr.strip().splitlines() == [result.stderr.strip()], result.stderr
        assert result.stderr.startswith("Error: ") and message in result.stderr, result.stderr
    assert set(shown(repo, env)) == before
    assert not (repo / "reports" / "search" / "bad.json").exists()


@pytest.mark.slow
def test_a_failing_trial_is_reported_and_the_next_one_still_runs(search_repo, tmp_path: Path):
    repo, env = search_repo
    # data's checks live in the prepare stage, so these pass the space's checks and fail in DVC
    components = {"data.components": {"distribution": "integer", "low": 5, "high": 9}}
    space = tmp_path / "failing.yaml"
    space.write_text(
        yaml.safe_dump({**SPACE, "name": "failing", "trials": 2, "params": components})
    )
    result = subprocess.run(
        ["digits", "search", "--space", str(space)], cwd=repo, env=env, capture_output=True,
        text=True,
    )  # fmt: skip
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stdout.count("needs whitening pca or zca") == 2  # both tried
    assert result.stderr.startswith("Error: 2 trials failed (a rerun retries them)")
    assert not any(name.startswith("failing-") for name in shown(repo, env))


def children(pid: int) -> list[int]:
    """The processes whose parent is `pid` (from /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):  # gone meanwhile
            continue
        if ppid == pid:
            found.append(int(stat.parent.name))
    return found


@pytest.mark.slow
def test_ctrl_c_keeps_finished_trials_and_a_rerun_continues(search_repo, tmp_path: Path):
    repo, env = search_repo
    space = tmp_path / "ctrlc.yaml"
    space.write_text(yaml.safe_dump({**SPACE, "name": "ctrlc", "trials": 2}, sort_keys=False))
    command = ["digits", "search", "--space", str(space)]
    status = run(["git", "status", "--porcelain"], repo, env)
    # A suite run as a background job inherits SIGINT ignored: give the search the default,
    # as a terminal's foreground job has, or the Ctrl-C below would never reach it.
    search = subprocess.Popen(
        command, cwd=repo, env={**env, "PYTHONUNBUFFERED": "1"}, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, start_new_session=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    lines = []
    for line in search.stdout:  # wait until the second trial has started
        lines.append(line)
        if line.startswith("[2/2]"):
            break
    # Inside `dvc exp run`: signal as soon as the second trial's process exists. A fixed sleep
    # let a fast machine finish the whole trial first; DVC takes seconds, polling 50 ms.
    deadline = time.monotonic() + 60
    while not children(search.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(search.pid, signal.SIGINT)  # what Ctrl-C in a terminal sends
    _, err = search.communicate(timeout=120)
    assert search.returncode == 130, "".join(lines) + err
    assert "interrupted" in err
    first, second = [line.split()[1].rstrip(":") for line in lines if line.startswith("[")]
    names = set(shown(repo, env))
    assert first in names and second not in names  # no half-written experiment
    assert run(["git", "status", "--porcelain"], repo, env) == status  # the workspace untouched
    again = digits(["search", "--space", str(space)], repo, env)
    assert "1 of 2 trials already run; running 1" in again
    assert {first, second} <= set(shown(repo, env))


@pytest.mark.slow
def test_a_study_runs_each_variant_over_seeds_and_writes_its_table(search_repo):
    repo, env = search_repo
    output = digits(["study", "batchnorm", "-s", "42", "-s", "1"], repo, env)
    result = json.loads((repo / "reports" / "studies" / "batchnorm.json").read_text())
    experiments = shown(repo, env)
    for variant, runs in result["runs"].items():
        assert [r["seed"] for r in runs] == [42, 1]
        for r in runs:
            params = experiments[r["name"]]["params"]
            assert params["base"]["seed"] == r["seed"]
            assert params["model"]["batchnorm"] == (variant == "on")
            assert r["dev_accuracy"] == experiments[r["name"]]["train"]["dev_accuracy"]
    rows = {row["variant"]: row for row in result["rows"]}
    assert set(rows) == {"on", "off"}
    for row in rows.values():
        accuracies = [r["dev_accuracy"] for r in result["runs"][row["variant"]]]
        assert row["dev_accuracy"][0] == pytest.approx(sum(accuracies) / 2)
    assert [row["verdict"] for row in result["rows"]][0] == "best"
    table = (repo / "reports" / "studies" / "batchnorm.md").read_text()
    assert "| variant | seeds | dev accuracy % |" in table and table in output + "\n"
    assert (repo / "reports" / "studies" / "batchnorm.png").read_bytes()[:4] == b"\x89PNG"
    [plots] = [line for line in table.splitlines() if "`dvc plots diff" in line]
    names = plots.split("`")[1].split()[3:]
    assert sorted(names) == sorted(runs[0]["name"] for runs in result["runs"].values())
    run(["dvc", "plots", "diff", *names, "-o", "study-plots"], repo, env)
    html = (repo / "study-plots" / "index.html").read_text()
    assert all(name in html for name in names)
    assert "0 of 4 runs already run" in output
    assert "4 of 4 runs already run; running 0" in digits(
        ["study", "batchnorm", "-s", "42", "-s", "1"], repo, env
    )


@pytest.mark.slow
def test_experiments_travel_between_clones_through_one_git_and_one_dvc_remote(
    search_repo, tmp_path: Path
):
    repo, env = search_repo
    git_remote, dvc_remote = tmp_path / "origin.git", tmp_path / "dvc-remote"
    run(["git", "clone", "-q", "--bare", str(repo), str(git_remote)], tmp_path, env)
    run(["dvc", "push", "-r", "local"], repo, env)  # the baseline's data, to the repo's own remote
    shutil.copytree(repo / "dvc-remote", dvc_remote)
    clones = {}
    for name in ("a", "b"):
        clone = tmp_path / name
        run(["git", "clone", "-q", str(git_remote), str(clone)], tmp_path, env)
        run(["dvc", "remote", "modify", "--local", "local", "url", str(dvc_remote)], clone, env)
        clones[name] = clone
    a, b = clones["a"], clones["b"]
    for clone, shard in ((a, "0/2"), (b, "1/2")):  # docs/experiments.md's steps, one machine each
        run(["dvc", "pull"], clone, env)
        digits(["search", "--trials", "2", "--shard", shard], clone, env)
        run(["dvc", "exp", "push", "origin", "--all-commits"], clone, env)
    assert len(shown(b, env)) == 1
    for clone in (a, b):
        run(["dvc", "exp", "pull", "origin", "--all-commits"], clone, env)
    seen = shown(b, env)
    assert seen == shown(a, env) and len(seen) == 2
    again = digits(["search", "--trials", "2"], b, env)
    assert "2 of 2 trials already run; running 0" in again
    board = json.loads((b / "reports" / "search" / "tiny.json").read_text())
    assert {t["name"] for t in board["trials"]} == set(seen)
    # A's model came along through the DVC remote: B's cache holds the bytes A trained.
    rows = json.loads(run(["dvc", "exp", "show", "--json"], b, env).splitlines()[0])
    [exp] = [e for r in rows for e in r.get("experiments") or [] if "-00-" in e["name"]]
    lock = yaml.safe_load(run(["git", "show", f"{exp['revs'][0]['rev']}:dvc.lock"], b, env))
    [out] = [o for o in lock["stages"]["train"]["outs"] if o["path"] == "models/mlp.pt"]
    cached = Path(".dvc", "cache", "files", "md5", out["md5"][:2], out["md5"][2:])
    assert (b / cached).read_bytes() == (a / cached).read_bytes()


@pytest.mark.slow
def test_applying_the_best_trial_and_reproducing_it_gives_the_same_model(searched):
    repo, env, _, board = searched
    best = board["trials"][0]["name"]
    run(["dvc", "exp", "apply", best], repo, env)
    recorded = (repo / "reports" / "train.json").read_text()
    assert json.loads(recorded)["dev_accuracy"] == board["trials"][0]["dev_accuracy"]
    lock = (repo / "dvc.lock").read_text()
    run(["dvc", "repro", "--force", "--single-item", "train"], repo, env)
    assert (repo / "reports" / "train.json").read_text() == recorded
    assert (repo / "dvc.lock").read_text() == lock  # same model bytes, same hash
