"""The whole pipeline, run by the real DVC on tiny fixture data in a scratch repository."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.conftest import write_mnist_idx

ROOT = Path(__file__).resolve().parents[1]

# Overrides that make each stage fast on the fixture; a group applies once the stage exists.
TINY_PARAMS: dict[str, dict] = {
    "model": {"hidden": [32, 16]},
    "train": {"epochs": 2, "batch_size": 64},
    "compress": {
        "structured_epochs": 1,
        "l1_epochs": 1,
        "steps": 2,
        "step_epochs": 1,
        "final_epochs": 1,
        "polish_epochs": 1,
        "sweep": [0.5, 0.9],
    },
    "learning_curve": {"fractions": [0.5, 1.0], "epochs": 1.0, "max_epochs": 2},
}


def run(cmd: list[str], cwd: Path, env: dict[str, str]) -> str:
    """Run a command, failing the test with its output when it exits non-zero."""
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"{' '.join(cmd)} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout + result.stderr


@pytest.fixture(scope="module")
def scratch_repo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """A git+DVC repo holding the project's pipeline definition and code, plus tiny MNIST."""
    repo = tmp_path_factory.mktemp("repo")
    for name in ("dvc.yaml", "params.yaml"):
        shutil.copy(ROOT / name, repo / name)
    for package in ("digits", "pipeline", "serving"):
        shutil.copytree(
            ROOT / package, repo / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    params = yaml.safe_load((repo / "params.yaml").read_text())
    for group, values in TINY_PARAMS.items():
        if group in params:
            params[group].update(values)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    mnist = tmp_path_factory.mktemp("mnist")
    checksums = write_mnist_idx(mnist)
    (mnist.parent / "checksums.json").write_text(json.dumps(checksums))
    env = {
        **os.environ,
        "DIGITS_MNIST_DIR": str(mnist),
        "DIGITS_MNIST_CHECKSUMS": str(mnist.parent / "checksums.json"),
        "DIGITS_OFFLINE": "1",
        "DIGITS_CACHE": str(tmp_path_factory.mktemp("cache")),
        "DVC_NO_ANALYTICS": "1",
    }
    run(["git", "init", "-q"], repo, env)
    run(["dvc", "init", "-q"], repo, env)
    run(["dvc", "config", "core.analytics", "false"], repo, env)
    # A real checkout has history; dvclive reads the current commit.
    git_id = ["-c", "user.name=test", "-c", "user.email=test@example.com"]
    run(["git", "add", "-A"], repo, env)
    run(["git", *git_id, "commit", "-qm", "scratch"], repo, env)
    return repo, env


@pytest.mark.slow
def test_dvc_repro_runs_every_stage_then_has_nothing_left_to_do(scratch_repo):
    repo, env = scratch_repo
    run(["dvc", "repro"], repo, env)
    stats = json.loads((repo / "reports" / "prepare.json").read_text())
    assert stats["sizes"] == {"train": 900, "dev": 100, "test": 300}
    assert (repo / "dvc.lock").is_file()
    export = json.loads((repo / "reports" / "export.json").read_text())
    assert export["argmax_agreement"] == 1.0
    assert export["max_abs_prob_diff"] <= 1e-5
    metrics = run(["dvc", "metrics", "show", "--json"], repo, env)
    assert "test_accuracy" in metrics and "sparsity" in metrics
    run(["dvc", "plots", "show", "-o", str(repo / "plots-html")], repo, env)
    assert (repo / "plots-html" / "index.html").is_file()
    second = run(["dvc", "repro"], repo, env)
    assert "Data and pipelines are up to date." in second
    assert "Running stage" not in second
    status = run(["dvc", "status"], repo, env)
    assert "up to date" in status


@pytest.mark.slow
def test_dvc_reruns_only_the_stages_a_param_change_affects(scratch_repo):
    repo, env = scratch_repo
    run(["dvc", "repro"], repo, env)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["data"]["dev_fraction"] = 0.2
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    output = run(["dvc", "repro"], repo, env)
    assert "Running stage 'prepare'" in output
    assert "Running stage 'fetch'" not in output
    stats = json.loads((repo / "reports" / "prepare.json").read_text())
    assert stats["sizes"]["dev"] == 200


@pytest.mark.slow
def test_batch_scoring_the_exported_model_reproduces_the_recorded_test_accuracy(scratch_repo):
    repo, env = scratch_repo
    run(["dvc", "repro"], repo, env)
    raw_test = repo / "data" / "raw" / "t10k-images-idx3-ubyte"
    out = run(["digits", "score", "models/digits.onnx", str(raw_test), "-o", "s.csv"], repo, env)
    recorded = json.loads((repo / "reports" / "evaluate.json").read_text())
    accuracy = recorded["compressed"]["test_accuracy"]
    assert f"accuracy {accuracy:.4f} (" in out, out
