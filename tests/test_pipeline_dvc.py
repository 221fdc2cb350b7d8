"""The whole pipeline, run by the real DVC on tiny fixture data in a scratch repository."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import onnx
import onnx.numpy_helper
import pytest
import yaml

from pipeline.portable import cpu_flags
from tests.conftest import commit, offline_mnist_env, run

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
    "robustness": {"per_kind": 50, "font_sizes": [28]},
}


@pytest.fixture(scope="module")
def scratch_repo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """A git+DVC repo holding the project's pipeline definition and code, plus tiny MNIST."""
    repo = tmp_path_factory.mktemp("repo")
    for name in ("dvc.yaml", "params.yaml", "reports/frontier.json"):  # the last: made outside
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
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
    env = offline_mnist_env(tmp_path_factory)
    run(["git", "init", "-q"], repo, env)
    run(["dvc", "init", "-q"], repo, env)
    for name in (".dvc/config", ".gitignore", ".dvcignore"):  # the project's remote and ignores
        shutil.copy(ROOT / name, repo / name)
    # A real checkout has history; dvclive reads the current commit.
    commit(repo, env, "scratch")
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
    # The size compress reports is what the ONNX file holds, counted here from its matrices.
    deployed = json.loads((repo / "reports" / "compress.json").read_text())["deployed"]
    graph = onnx.load(repo / "models" / "digits.onnx").graph
    matrices = [onnx.numpy_helper.to_array(t) for t in graph.initializer if len(t.dims) == 2]
    assert sum(int((m != 0).sum()) for m in matrices) == deployed["nonzero_total"] > 0
    metrics = run(["dvc", "metrics", "show", "--json"], repo, env)
    assert "test_accuracy" in metrics and "sparsity" in metrics
    assert "mean_corruption_accuracy" in metrics and "font_accuracy" in metrics
    robustness = json.loads((repo / "reports" / "robustness.json").read_text())
    assert len(robustness["corruptions"]) >= 12
    assert (
        "![robustness examples](figures/robustness.png)" in (repo / "reports/report.md").read_text()
    )
    assert (repo / "reports" / "figures" / "robustness.png").is_file()
    run(["dvc", "plots", "show", "-o", str(repo / "plots-html")], repo, env)
    assert (repo / "plots-html" / "index.html").is_file()
    second = run(["dvc", "repro"], repo, env)
    assert "Data and pipelines are up to date." in second
    assert "Running stage" not in second
    status = run(["dvc", "status"], repo, env)
    assert "up to date" in status


def downstream(repo: Path, env: dict[str, str], group: str) -> set[str]:
    """The stages that read params `group`, and every stage after them in `dvc dag`."""
    stages = yaml.safe_load((repo / "dvc.yaml").read_text())["stages"]
    edges = re.findall(r'"([\w-]+)" -> "([\w-]+)"', run(["dvc", "dag", "--dot"], repo, env))
    assert edges, "dvc dag --dot drew no edges"
    found = {name for name, stage in stages.items() if group in stage.get("params", [])}
    while True:
        more = {after for before, after in edges if before in found} - found
        if not more:
            return found
        found |= more


def repro_with(repo: Path, env: dict[str, str], group: str, key: str, value) -> tuple[set, set]:
    """Set params `group.key` to `value`, `dvc repro`; return the stages run and skipped."""
    params = yaml.safe_load((repo / "params.yaml").read_text())
    assert params[group][key] != value, "the change must change something"
    params[group][key] = value
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    output = run(["dvc", "repro"], repo, env)
    ran = re.findall(r"Running stage '([\w-]+)'", output)
    skipped = re.findall(r"Stage '([\w-]+)' didn't change, skipping", output)
    assert len(ran) == len(set(ran)), output  # no stage runs twice
    return set(ran), set(skipped)


@pytest.fixture
def repo_copy(scratch_repo, tmp_path: Path) -> tuple[Path, dict[str, str], set[str]]:
    """A copy of the scratch repo after a full `dvc repro`, to change params in; its stages."""
    repo, env = scratch_repo
    run(["dvc", "repro"], repo, env)
    copy = tmp_path / "repo"
    shutil.copytree(repo, copy, symlinks=True)
    stages = set(yaml.safe_load((copy / "dvc.yaml").read_text())["stages"])
    return copy, env, stages


@pytest.mark.slow
def test_dvc_reruns_only_the_stages_a_param_change_affects(repo_copy):
    repo, env, stages = repo_copy
    affected = downstream(repo, env, "data")
    assert affected == stages - {"fetch"}  # data feeds prepare, and everything after it reads it
    ran, skipped = repro_with(repo, env, "data", "dev_fraction", 0.2)
    assert ran == affected
    assert skipped == stages - affected
    stats = json.loads((repo / "reports" / "prepare.json").read_text())
    assert stats["sizes"]["dev"] == 200
    assert "Running stage" not in run(["dvc", "repro"], repo, env)


@pytest.mark.slow
def test_dvc_reruns_only_the_later_stages_a_late_param_affects(repo_copy):
    repo, env, stages = repo_copy
    affected = downstream(repo, env, "export")
    # robustness reads the ONNX file and report draws robustness's figure. The file's metadata
    # (params digest) changes, so robustness reruns; the network is the same, so its outputs are
    # byte for byte the same and DVC skips report.
    assert affected == {"export", "robustness", "report"}
    ran, skipped = repro_with(repo, env, "export", "weight_type", "qint8")
    assert ran == affected - {"report"}
    assert skipped == stages - ran
    int8 = onnx.load(repo / "models" / "digits-int8.onnx")
    assert {p.key: p.value for p in int8.metadata_props}["quantization"].startswith("dynamic qint8")
    # bayes_error moves the avoidable-bias figure in evaluate.json, which report and export read.
    affected = downstream(repo, env, "evaluate")
    assert affected == {"evaluate", "report", "export", "robustness"}
    ran, skipped = repro_with(repo, env, "evaluate", "bayes_error", 0.003)
    # export reruns but writes the same ONNX bytes (bayes_error is not in the model), so DVC
    # skips robustness: it reads only that file.
    assert ran == affected - {"robustness"}
    assert skipped == stages - ran
    # The benchmark's own params touch only the benchmark and the report that draws it.
    affected = downstream(repo, env, "robustness")
    assert affected == {"robustness", "report"}
    ran, skipped = repro_with(repo, env, "robustness", "per_kind", 40)
    assert ran == affected
    assert skipped == stages - affected


@pytest.mark.slow
def test_batch_scoring_the_exported_model_reproduces_the_recorded_test_accuracy(scratch_repo):
    repo, env = scratch_repo
    run(["dvc", "repro"], repo, env)
    raw_test = repo / "data" / "raw" / "t10k-images-idx3-ubyte"
    out = run(["digits", "score", "models/digits.onnx", str(raw_test), "-o", "s.csv"], repo, env)
    recorded = json.loads((repo / "reports" / "evaluate.json").read_text())
    accuracy = recorded["compressed"]["test_accuracy"]
    assert f"accuracy {accuracy:.4f} (" in out, out


@pytest.mark.slow
def test_two_runs_on_the_same_inputs_give_byte_identical_outputs(repo_copy):
    repo, env, _ = repo_copy
    first = (repo / "dvc.lock").read_text()  # every output's hash, metrics and plots included
    output = run(["dvc", "repro", "--force"], repo, env)
    assert "Running stage 'train'" in output
    assert (repo / "dvc.lock").read_text() == first


# Kernel choices that part plain runs at the first step (pipeline.tools.fingerprint, --matrix).
OTHER_KERNELS = {
    "ATEN_CPU_CAPABILITY": "avx2",
    "MKL_CBWR": "AVX2",
    "ONEDNN_MAX_CPU_ISA": "SSE41",
    "OMP_NUM_THREADS": "1",
}


@pytest.mark.slow
def test_portable_mode_writes_the_same_bytes_under_other_kernels_and_thread_counts(repo_copy):
    repo, env, _ = repo_copy
    first = (repo / "dvc.lock").read_text()  # scalar kernels, the machine's thread count
    output = run(["dvc", "repro", "--force"], repo, {**env, **OTHER_KERNELS})
    assert "Running stage 'robustness'" in output
    assert (repo / "dvc.lock").read_text() == first


@pytest.mark.slow
@pytest.mark.skipif("avx2" not in cpu_flags(), reason="the other kernels need AVX2")
def test_without_portable_mode_those_kernel_choices_train_another_model(repo_copy):
    repo, env, _ = repo_copy
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["base"]["portable"] = False
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    models = []
    for kernels in ({"ATEN_CPU_CAPABILITY": "default", "MKL_CBWR": "COMPATIBLE"}, OTHER_KERNELS):
        run(["digits", "train"], repo, {**env, **kernels})
        models.append((repo / "models" / "mlp.pt").read_bytes())
    assert models[0] != models[1]  # so the test above compares runs that would have parted


@pytest.mark.slow
def test_a_fresh_clone_shows_the_metrics_and_pulls_what_it_needs_without_training(
    repo_copy, tmp_path: Path
):
    repo, env, _ = repo_copy
    commit(repo, env, "record the run")  # dvc.lock, metrics and plots go to git
    # A registered model version is an annotated git tag, as GTO (DVC's registry) writes them.
    run(["git", "tag", "-a", "digits@v0.1.0", "-m", "Register digits v0.1.0"], repo, env)
    run(["dvc", "push"], repo, env)
    remote = repo / "dvc-remote"
    assert remote.is_dir() and any(remote.rglob("*"))
    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(repo), str(clone)], tmp_path, env)
    recorded = json.loads((repo / "reports" / "evaluate.json").read_text())
    shown = json.loads(run(["dvc", "metrics", "show", "--json"], clone, env).splitlines()[0])
    [workspace] = shown.values()
    shown_evaluate = workspace["data"]["reports/evaluate.json"]["data"]
    for model in ("dense", "compressed"):  # the numbers DVC shows (it leaves out text)
        assert shown_evaluate[model] == recorded[model]
    # The default remote is a directory inside each checkout; a clone points at the shared one.
    run(["dvc", "remote", "modify", "--local", "local", "url", str(remote)], clone, env)
    run(["dvc", "pull"], clone, env)
    for name in ("digits.onnx", "digits.golden.npz", "mlp.pt"):
        assert (clone / "models" / name).read_bytes() == (repo / "models" / name).read_bytes()
    again = run(["dvc", "repro"], clone, env)
    assert "Running stage" not in again and "Data and pipelines are up to date." in again
    assert "verified" in run(["digits", "verify", "models/digits.onnx"], clone, env)
    model = clone / "models" / "digits.onnx"
    proto = onnx.load(model)
    weights = max(proto.graph.initializer, key=lambda t: len(t.raw_data))  # the largest layer
    array = onnx.numpy_helper.to_array(weights) * 1.5
    weights.CopyFrom(onnx.numpy_helper.from_array(array, weights.name))
    onnx.save(proto, model)
    result = subprocess.run(
        ["digits", "verify", str(model)], env=env, capture_output=True, text=True
    )
    assert result.returncode == 1 and "Error: " in result.stderr, result.stderr
    assert "modified" in run(["dvc", "status"], clone, env)
    got = tmp_path / "got.onnx"
    remote_url = f"url={remote}"
    run(
        [
            "dvc",
            "artifacts",
            "get",
            str(clone),
            "digits",
            "-o",
            str(got),
            "--remote-config",
            remote_url,
        ],
        tmp_path,
        env,
    )
    assert got.read_bytes() == (repo / "models" / "digits.onnx").read_bytes()


@pytest.mark.slow
def test_dvc_exp_show_prints_an_experiments_metrics(repo_copy):
    repo, env, _ = repo_copy
    commit(repo, env, "baseline")
    run(
        ["dvc", "exp", "run", "--temp", "-n", "bayes", "-S", "evaluate.bayes_error=0.01"], repo, env
    )
    rows = json.loads(run(["dvc", "exp", "show", "--json"], repo, env).splitlines()[0])
    experiments = [
        exp for row in rows for exp in row.get("experiments") or [] if exp.get("name") == "bayes"
    ]
    assert experiments, rows
    revs = experiments[0]["revs"][0]["data"]
    metrics = revs["metrics"]["reports/evaluate.json"]["data"]
    assert 0 <= metrics["compressed"]["test_accuracy"] <= 1
    assert metrics["diagnosis"]["compressed"]["bayes_error"] == 0.01
    diff = run(["dvc", "metrics", "diff", "HEAD", "bayes", "--json"], repo, env)
    assert "reports/evaluate.json" in diff
