"""The house's import rules, read from the source: who may import stages, tools, torch and pipeline,
and that no modules import each other in a circle."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
STAGES = sorted(p.stem for p in (ROOT / "pipeline" / "stages").glob("*.py") if p.stem != "__init__")
TOOLS = sorted(p for p in (ROOT / "pipeline" / "tools").glob("*.py") if p.stem != "__init__")
PROJECT = ("digits", "pipeline", "serving", "bench")


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


@pytest.mark.parametrize("path", sources(*PROJECT), ids=relative)
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


@pytest.mark.parametrize("path", TOOLS, ids=relative)
def test_no_tool_imports_another_tool(path: Path) -> None:
    tool_imports = {m for m in imported_modules(path) if m.split(".")[:2] == ["pipeline", "tools"]}
    assert tool_imports == set(), f"{relative(path)} imports {sorted(tool_imports)}"


def module_name(path: Path) -> str:
    """The dotted name of a project file: pipeline/model/network.py is pipeline.model.network."""
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_imports(path: Path, modules: set[str]) -> set[str]:
    """The project modules a file imports, at any depth (a function's lazy import too, and
    TYPE_CHECKING ones): `from pkg import mod` counts as pkg.mod when that is a module, else as
    pkg; relative imports resolved against the file's package.
    """
    package = module_name(path) if path.stem == "__init__" else module_name(path).rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0]
                base = f"{anchor}.{base}" if base else anchor
            for alias in node.names:
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base)
    return found & modules


def import_graph() -> dict[str, set[str]]:
    """Every project module (digits, pipeline, serving, bench) -> the project modules it imports."""
    paths = {module_name(path): path for path in sources(*PROJECT)}
    return {name: project_imports(path, set(paths)) for name, path in paths.items()}


def import_circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One circle per strongly connected component of the graph (Tarjan), as a closed path."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    components: list[list[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in sorted(graph[node]):
            if target not in index:
                connect(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while not component or component[-1] != node:
                component.append(stack.pop())
            if len(component) > 1 or node in graph[node]:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return [circle_through(graph, component) for component in components]


def circle_through(graph: dict[str, set[str]], component: list[str]) -> list[str]:
    """A shortest closed import path from the component's first module back to it (BFS)."""
    start, members = component[0], set(component)
    paths = {start: [start]}
    queue = [start]
    while queue:
        node = queue.pop(0)
        for target in sorted(graph[node] & members):
            if target == start:
                return [*paths[node], start]
            if target not in paths:
                paths[target] = [*paths[node], target]
                queue.append(target)
    raise AssertionError(f"no circle through {start}")


def test_no_import_circles() -> None:
    circles = import_circles(import_graph())
    assert circles == [], "import circles: " + "; ".join(" -> ".join(c) for c in circles)


def test_the_circle_search_finds_a_circle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set(), "e": {"e"}}
    assert import_circles(graph) == [["a", "b", "c", "a"], ["e", "e"]]
