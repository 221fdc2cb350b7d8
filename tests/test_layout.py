"""The house's import rules, read from the source: who may import stages, torch and pipeline."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
STAGES = sorted(p.stem for p in (ROOT / "pipeline" / "stages").glob("*.py") if p.stem != "__init__")


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports, absolute names, at any depth of the file."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def relative(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def sources(*folders: str) -> list[Path]:
    return sorted(p for folder in folders for p in (ROOT / folder).rglob("*.py"))


def test_the_stages_are_the_dvc_stages() -> None:
    import yaml

    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    commands = {spec["cmd"].split()[1].replace("-", "_") for spec in stages.values()}
    assert commands == set(STAGES)


@pytest.mark.parametrize("path", sources("digits", "pipeline", "serving", "bench"), ids=relative)
def test_only_the_cli_reaches_stage_modules(path: Path) -> None:
    stage_imports = {m for m in imported_modules(path) if m.startswith("pipeline.stages")}
    assert stage_imports == set(), f"{relative(path)} imports {sorted(stage_imports)}"


@pytest.mark.parametrize("path", sources("digits", "serving"), ids=relative)
def test_the_core_and_serving_never_import_torch_or_pipeline(path: Path) -> None:
    roots = {m.split(".")[0] for m in imported_modules(path)}
    assert not roots & {"torch", "pipeline", "onnx", "dvc", "dvclive"}, path


@pytest.mark.parametrize("path", sources("digits"), ids=relative)
def test_the_core_needs_only_numpy_pillow_and_click(path: Path) -> None:
    roots = {m.split(".")[0] for m in imported_modules(path)}
    third_party = roots - set(sys.stdlib_module_names) - {"digits", "__future__"}
    assert third_party <= {"numpy", "PIL", "click"}, path


def module_name(path: Path) -> str:
    """A source file's absolute module name (a package's __init__ names the package)."""
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_circle(graph: dict[str, set[str]]) -> list[str]:
    """One circle of imports in `graph` (module -> the modules it imports), or [] when none."""
    done: set[str] = set()

    def visit(module: str, path: list[str]) -> list[str]:
        if module in path:
            return path[path.index(module) :] + [module]
        if module in done:
            return []
        for imported in sorted(graph[module]):
            if circle := visit(imported, [*path, module]):
                return circle
        done.add(module)
        return []

    return next((c for m in sorted(graph) if (c := visit(m, []))), [])


@pytest.mark.parametrize("package", ["digits", "serving"])
def test_no_import_circles(package: str) -> None:
    modules = {module_name(p): p for p in sources(package)}
    graph = {m: imported_modules(p) & modules.keys() - {m} for m, p in modules.items()}
    assert import_circle(graph) == [], " -> ".join(import_circle(graph))
