"""Shared fixtures and helpers live in conftest.py files: no test module imports another.

A test module imported by another runs its module-level code twice and drags its fixtures
into a namespace pytest then collects from; conftest.py is where pytest looks for shared ones.
"""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).parent


def module_name(path: Path, root: Path = TESTS.parent) -> str:
    """The dotted name of a file under root (tests/pipeline/test_x.py -> tests.pipeline.test_x)."""
    return ".".join(path.relative_to(root).with_suffix("").parts)


def imported_modules(path: Path, root: Path = TESTS.parent) -> set[str]:
    """Every name a file imports, anywhere in it (functions too), as absolute dotted names."""
    package = module_name(path, root).rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from .test_x import y, from . import test_x
                parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{parent}.{base}" if base else parent
            found.add(base)
            found |= {f"{base}.{alias.name}" for alias in node.names}
    return found


def find_test_modules() -> dict[str, Path]:
    """Every test module under tests/, by dotted name."""
    return {module_name(path): path for path in TESTS.rglob("test_*.py")}


def test_no_test_module_or_conftest_imports_a_test_module():
    modules = find_test_modules()
    files = [*modules.values(), *TESTS.rglob("conftest.py")]
    offenders = {
        f"{path.relative_to(TESTS.parent)} imports {name}"
        for path in files
        for name in imported_modules(path) & modules.keys()
        if name != module_name(path)
    }
    assert not offenders, sorted(offenders)


def test_the_import_finder_sees_absolute_relative_and_nested_imports(tmp_path):
    package = tmp_path / "tests" / "pipeline"
    package.mkdir(parents=True)
    source = package / "test_probe.py"
    source.write_text(
        "import tests.serving.test_http\n"
        "from .test_train import tiny_model\n"
        "from .. import conftest\n"
        "def test_x():\n"
        "    from tests.pipeline.test_report import diagnosed_run\n"
    )
    assert {
        "tests.serving.test_http",
        "tests.pipeline.test_train",
        "tests.pipeline.test_train.tiny_model",
        "tests.conftest",
        "tests.pipeline.test_report",
    } <= imported_modules(source, root=tmp_path)
