"""The serving install: no torch anywhere it runs, in the venv or in the Bento it builds.

`make test` runs tests/digits and tests/serving a second time in a venv with the base install
only (`pip install digits`, no pipeline extra); the tests marked for that venv run there.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import yaml

from tests.conftest import write_linear_onnx
from tests.serving.conftest import free_port, ready

ROOT = Path(__file__).resolve().parents[2]
DIGITS = Path(sys.executable).parent / "digits"
serving_install_only = pytest.mark.skipif(
    importlib.util.find_spec("torch") is not None,
    reason="runs in the serving-only venv (make test-serving), where torch is absent",
)


@serving_install_only
@pytest.mark.parametrize("command", ["train", "compress", "evaluate", "export"])
def test_pipeline_commands_say_which_extra_they_need(command: str) -> None:
    result = subprocess.run([DIGITS, command, "--params", "x.yaml"], capture_output=True, text=True)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert f"`digits {command}` needs the pipeline extra: pip install 'digits[pipeline]'" in (
        result.stderr
    )


def test_help_lists_every_command_in_any_install() -> None:
    result = subprocess.run([DIGITS, "--help"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    for command in ("fetch", "train", "compress", "export", "score", "serve"):
        assert f"  {command} " in result.stdout


@pytest.fixture(scope="module")
def bento(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """`bentoml build` of the project's bentofile, with a tiny model, in a scratch BENTOML_HOME."""
    project = tmp_path_factory.mktemp("project")
    shutil.copy(ROOT / "bentofile.yaml", project)
    for package in ("digits", "serving"):
        shutil.copytree(ROOT / package, project / package, ignore=shutil.ignore_patterns("__py*"))
    (project / "models").mkdir()
    write_linear_onnx(project / "models" / "digits.onnx", version="bento")
    home = tmp_path_factory.mktemp("bentoml")
    env = {**os.environ, "BENTOML_HOME": str(home), "BENTOML_DO_NOT_TRACK": "true"}
    bentoml = [sys.executable, "-m", "bentoml"]
    build = subprocess.run(
        [*bentoml, "build", "--output", "tag"], cwd=project, env=env, capture_output=True, text=True
    )
    assert build.returncode == 0, build.stderr
    tag = build.stdout.strip().rsplit("__tag__:", 1)[-1]
    name, version = tag.split(":")
    return home / "bentos" / name / version, env


@pytest.mark.e2e
def test_bento_carries_the_service_and_no_torch_or_pipeline(bento) -> None:
    path, _ = bento
    packages = (path / "env" / "python" / "requirements.txt").read_text().lower().splitlines()
    names = {line.split("==")[0].strip() for line in packages if "==" in line}
    assert {"bentoml", "onnxruntime-gpu", "pillow"} <= names
    assert not names & {"torch", "dvc", "dvclive", "onnxscript", "matplotlib"}
    # torch's CUDA wheels (nvidia-cudnn-cu13, ...); BentoML's own nvidia-ml-py is a small binding
    assert not any(name.startswith("nvidia-cu") for name in names)
    sources = {p.relative_to(path / "src").as_posix() for p in (path / "src").rglob("*.py")}
    assert {"serving/service/bento.py", "digits/images.py", "digits/idx.py"} <= sources
    assert not any(p.startswith("pipeline/") for p in sources)
    meta = yaml.safe_load((path / "bento.yaml").read_text())
    assert meta["service"] == "serving.service.bento:Digits"


@pytest.mark.e2e
def test_the_built_bento_serves_predictions(bento, tmp_path: Path) -> None:
    path, env = bento
    port = free_port()
    command = [sys.executable, "-m", "bentoml", "serve", str(path), "--port", str(port)]
    log = (tmp_path / "bento.log").open("wb")
    proc = subprocess.Popen(
        [*command, "--host", "127.0.0.1"], cwd=tmp_path, env=env, stdout=log, stderr=log
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while not ready(url):
            assert proc.poll() is None and time.monotonic() < deadline, (
                tmp_path / "bento.log"
            ).read_text()[-3000:]
            time.sleep(0.2)
        pixels = np.zeros((2, 784)).tolist()
        answer = httpx.post(f"{url}/predict", json={"pixels": pixels}, timeout=10).json()
        assert len(answer["digits"]) == 2 and answer["model_version"] == "bento"
    finally:
        proc.terminate()
        proc.wait(20)
        log.close()
