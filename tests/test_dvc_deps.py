"""dvc.yaml declares every project file each stage's code runs, and no other code file."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
STAGES = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
PACKAGES = ("digits", "pipeline")

# In a fresh interpreter: import the stage's module as `digits <stage>` does, then list the
# project modules that came with it (the module's imports, and theirs).
PROBE = """
import importlib, json, sys
importlib.import_module(sys.argv[1])
files = [m.__file__ for name, m in list(sys.modules.items()) if name.split(".")[0] in {packages}]
print(json.dumps(files))
"""


def imported_files(module: str) -> set[str]:
    """Project files (relative to the repo) loaded by importing `module` in a new interpreter."""
    probe = PROBE.format(packages=PACKAGES)
    result = subprocess.run(
        [sys.executable, "-c", probe, module], cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    return {Path(f).resolve().relative_to(ROOT).as_posix() for f in json.loads(result.stdout)}


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_each_stage_declares_exactly_the_code_it_imports(stage: str) -> None:
    command = STAGES[stage]["cmd"].split()
    assert command[:2] == ["digits", stage]
    module = f"pipeline.stages.{stage.replace('-', '_')}"
    declared = {d for d in STAGES[stage]["deps"] if d.endswith(".py")}
    assert declared == imported_files(module)
