"""Search and studies run by the real DVC and git on tiny fixture data in scratch repositories."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import write_mnist_idx

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


def run(cmd: list[str], cwd: Path, env: dict[str, str], check: bool = True) -> str:
    """Run a command, failing the test with its output when it exits non-zero."""
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    if check:
        assert result.returncode == 0, f"{' '.join(cmd)} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout + result.stderr


def commit(repo: Path, env: dict[str, str], message: str) -> None:
    """Commit everything git does not ignore."""
    run(["git", "add", "-A"], repo, env)
    git_id = ["-c", "user.name=test", "-c", "user.email=test@example.com"]
    run(["git", *git_id, "commit", "-qm", message], repo, env)


@pytest.fixture(scope="module")
def search_repo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """A git+DVC repo with the project's pipeline, tiny params and data trained once (train)."""
    repo = tmp_path_factory.mktemp("search-repo")
    for name in ("dvc.yaml", "params.yaml", ".gitignore", ".dvcignore"):
        shutil.copy(ROOT / name, repo / name)
    for package in ("digits", "pipeline", "serving"):  # the stages' deps
        shutil.copytree(
            ROOT / package, repo / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    params = yaml.safe_load((repo / "params.yaml").read_text())
    for group, values in TINY.items():
        params[group].update(values)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (repo / "search.yaml").write_text(yaml.safe_dump(SPACE, sort_keys=False))
    mnist = tmp_path_factory.mktemp("mnist")
    checksums = write_mnist_idx(mnist, n_train=500, n_test=100)
    (mnist.parent / "checksums.json").write_text(json.dumps(checksums))
    env = {
        **os.environ,
        "DIGITS_MNIST_DIR": str(mnist),
        "DIGITS_MNIST_CHECKSUMS": str(mnist.parent / "checksums.json"),
        "DIGITS_OFFLINE": "1",
        "DIGITS_CACHE": str(tmp_path_factory.mktemp("cache")),
        "DIGITS_LOGS": str(tmp_path_factory.mktemp("logs")),
        "DVC_NO_ANALYTICS": "1",
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
