"""Portable mode: the `digits` command sets its kernels before torch loads, and refuses without."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from digits.cli import params_file
from pipeline.portable import ENVIRONMENT, cpu_flags, switched_on

ROOT = Path(__file__).resolve().parents[2]
# The machine's own choice, as a shell without portable mode's variables has it.
PLAIN_ENV = {k: v for k, v in os.environ.items() if k not in ENVIRONMENT}


def fingerprint(tmp_path: Path, env: dict[str, str], **base) -> dict:
    """`digits fingerprint --json` for 3 steps with params `base` overrides, under env."""
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"base": {"seed": 0, "portable": True, **base}}))
    done = subprocess.run(
        [sys.executable, "-m", "digits", "fingerprint", "--steps", "3", "--json"]
        + ["--params", str(params)],
        env=env, cwd=ROOT, capture_output=True, text=True, check=True,
    )  # fmt: skip
    return json.loads(done.stdout)


def test_the_digits_command_runs_the_scalar_kernels_with_the_params_threads(tmp_path):
    answer = fingerprint(tmp_path, {**PLAIN_ENV, "ATEN_CPU_CAPABILITY": "avx2"}, threads=3)
    assert answer["kernels"] == "DEFAULT, 3 threads"


@pytest.mark.skipif("avx2" not in cpu_flags(), reason="needs a CPU with AVX2")
def test_with_portable_off_the_machine_picks_the_kernels(tmp_path):
    env = {**PLAIN_ENV, "ATEN_CPU_CAPABILITY": "avx2"}
    plain = fingerprint(tmp_path, env, portable=False)
    assert plain["kernels"].startswith("AVX2,")
    assert plain["steps"] != fingerprint(tmp_path, env)["steps"]


def test_other_kernel_choices_and_thread_counts_give_the_same_fingerprints(tmp_path):
    first = fingerprint(tmp_path, PLAIN_ENV)
    other = {"ATEN_CPU_CAPABILITY": "avx512", "MKL_CBWR": "AVX512", "OMP_NUM_THREADS": "1"}
    assert fingerprint(tmp_path, {**PLAIN_ENV, **other}) == first
    assert len(first["steps"]) == 4  # the start and after each of steps 1–3


def test_a_torch_loaded_without_the_portable_kernels_is_refused():
    code = (
        "import torch\n"
        "from pipeline.config import BaseParams, begin_stage\n"
        "begin_stage(BaseParams(portable=True))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], env=PLAIN_ENV, cwd=ROOT, capture_output=True, text=True
    )
    assert done.returncode != 0
    assert "portable mode needs ATEN_CPU_CAPABILITY, MKL_CBWR" in done.stderr


def test_portable_mode_is_off_unless_params_turn_it_on(tmp_path):
    params = tmp_path / "params.yaml"
    assert not switched_on(params)  # no file: the stage's own params loading reports that
    params.write_text("base: {portable: true}\n")
    assert switched_on(params)
    for text in ("base: {seed: 1}\n", "base: {portable: false}\n", "base: [unclosed\n"):
        params.write_text(text)
        assert not switched_on(params)


def test_the_project_params_record_the_run_in_portable_mode():
    assert switched_on(ROOT / "params.yaml")


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ([], "params.yaml"),
        (["--params", "other.yaml"], "other.yaml"),
        (["--params=exp/p.yaml", "--models", "m"], "exp/p.yaml"),
        (["--params"], "params.yaml"),
    ],
)
def test_the_params_file_is_read_from_either_spelling_of_the_option(args, expected):
    assert params_file(args) == Path(expected)
