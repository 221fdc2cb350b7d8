"""The README and the manual in docs/ point at things that exist; the README stays short.

Checks README.md and docs/*.md, without the network:
- every relative Markdown link names a file or folder of this repository, and its `#anchor`,
  if any, a heading of the Markdown file it points to (GitHub's heading ids);
- every repository path in backticks (inline code and fenced blocks) exists:
  * a source path, one under SOURCE_ROOTS (`pipeline/…`, `serving/…`, `bench/…`, …), must be
    in the checkout; `{a,b}`, globs and `<placeholder>` segments must match at least one file;
  * a generated path, one under GENERATED_ROOTS (`data/…`, `models/…`, `reports/…`, …), must
    be in the checkout (committed metrics and reports), or be written by a DVC stage (equal
    to, under or above an `outs`/`metrics`/`plots` entry of dvc.yaml), or be one of
    OUTSIDE_THE_DAG, the outputs of commands `dvc repro` does not run;
  * a dotted module in backticks (`serving.service.bento:Digits`, `digits.images.upright`)
    must be a module of ours (the part before `:` whole; without `:`, all but the last name);
- README.md has at most README_MAX_LINES lines.
"""

from __future__ import annotations

import fnmatch
import re
from functools import cache
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
README_MAX_LINES = 250

# First path segments that name code, config and docs: these must exist in the checkout.
SOURCE_ROOTS = {
    "digits", "pipeline", "serving", "bench", "tests", "docs", "deploy", "scripts", ".ci", ".dvc",
}  # fmt: skip
# Outputs of `dvc repro`, benchmarks and tools: git-ignored or committed metrics.
GENERATED_ROOTS = ("data/", "models/", "reports/", "dvclive/", "logs/", "bench/results/")
GENERATED_ROOTS += ("mutants/", "dvc-remote/")
# Written by commands outside the DAG (not in dvc.yaml), each with the command that writes it.
OUTSIDE_THE_DAG = {
    "models/train-state.pt": "digits train (resume state, beside the checkpoint)",
    "models/digits-ensemble.onnx": "digits ensemble",
    "models/digits-ensemble.golden.npz": "digits ensemble",
    "reports/ensemble.json": "digits ensemble",
    "reports/lr_find.json": "digits lr-find",
    "reports/lr_find.png": "digits lr-find",
    "logs/": "every stage's run log (git-ignored)",
    "bench/results/": "the bench scripts (git-ignored)",
    "mutants/": "make mutation (git-ignored)",
    "dvc-remote/": "the default DVC remote (git-ignored)",
}
PYTHON_PACKAGES = ("digits", "pipeline", "serving")
FILE_SUFFIXES = {"onnx", "npz", "npy", "py", "md", "json", "jsonl", "yaml", "toml", "png", "pt"}
FILE_SUFFIXES |= {"csv", "parquet", "html", "txt", "lock"}

FENCE = re.compile(r"^\s*(```|~~~)")
INLINE_CODE = re.compile(r"(`+)(.+?)\1")
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s|$)")
HEADING = re.compile(r"^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")
TOKEN_SPLIT = re.compile(r"[\s=@'\"();|]+|,(?![^{}]*\})")  # a comma inside {a,b} stays
DOTTED = re.compile(rf"^(?:{'|'.join(PYTHON_PACKAGES)})(?:\.[A-Za-z_]\w*)+(?::[A-Za-z_]\w*)?$")


def lines_of(doc: Path) -> list[tuple[int, str, bool]]:
    """(line number, text, inside a fenced block) for each line; fence lines themselves left out."""
    rows, fenced = [], False
    for number, text in enumerate(doc.read_text(encoding="utf-8").splitlines(), 1):
        if FENCE.match(text):
            fenced = not fenced
            continue
        rows.append((number, text, fenced))
    return rows


def slug(heading: str) -> str:
    """GitHub's id for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link's text only
    text = text.replace("`", "").replace("*", "").lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


@cache
def anchors(doc: Path) -> set[str]:
    """The heading ids of a Markdown file, duplicates numbered as GitHub numbers them."""
    ids: set[str] = set()
    counts: dict[str, int] = {}
    for _, text, fenced in lines_of(doc):
        match = None if fenced else HEADING.match(text)
        if match:
            base = slug(match.group(2))
            counts[base] = counts.get(base, -1) + 1
            ids.add(f"{base}-{counts[base]}" if counts[base] else base)
    return ids


def link_problem(doc: Path, target: str) -> str | None:
    """Why a link target of `doc` is broken, or None (URLs are not checked)."""
    if SCHEME.match(target):
        return None
    path, _, anchor = target.partition("#")
    file = (doc.parent / path).resolve() if path else doc
    if not file.exists():
        return f"broken link {target!r}: {path} does not exist"
    if ROOT not in (file, *file.parents):
        return f"link {target!r} leaves the repository"
    if anchor and file.suffix == ".md" and anchor not in anchors(file):
        return f"broken link {target!r}: no heading #{anchor} in {file.relative_to(ROOT)}"
    return None


def expand_braces(path: str) -> list[str]:
    """`a/{b,c}.npz` as `a/b.npz`, `a/c.npz` (nested braces too)."""
    match = re.search(r"\{([^{}]*)\}", path)
    if not match:
        return [path]
    head, tail = path[: match.start()], path[match.end() :]
    return [p for part in match.group(1).split(",") for p in expand_braces(head + part + tail)]


@cache
def dvc_outputs() -> tuple[str, ...]:
    """Every path a stage of dvc.yaml writes (outs, metrics, plots)."""
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    paths = []
    for stage in stages.values():
        for key in ("outs", "metrics", "plots"):
            for entry in stage.get(key, []):
                paths.append(next(iter(entry)) if isinstance(entry, dict) else entry)
    return tuple(p.rstrip("/") for p in paths)


def in_checkout(pattern: str) -> bool:
    """Whether a path or glob names at least one file or folder of the checkout."""
    if any(c in pattern for c in "*?["):
        return next(ROOT.glob(pattern), None) is not None
    return (ROOT / pattern).exists()


def covers(output: str, pattern: str) -> bool:
    """Whether `pattern` names `output`, something inside it, or a folder holding it."""
    under = pattern.startswith(output + "/")
    return fnmatch.fnmatch(output, pattern) or under or output.startswith(pattern + "/")


def generated(pattern: str) -> bool:
    """Whether a stage or a command outside the DAG writes what `pattern` names."""
    if in_checkout(pattern) or any(covers(out, pattern) for out in dvc_outputs()):
        return True
    return any(
        pattern == known.rstrip("/") or (known.endswith("/") and pattern.startswith(known))
        for known in OUTSIDE_THE_DAG
    )


def path_problem(token: str) -> str | None:
    """Why a token in backticks names a repository path that is not there, or None."""
    token = token.strip(".,:;[]").removeprefix("./")  # `[--model PATH]`: an optional flag
    if (match := re.match(r"^(.+\.(\w+)):[A-Za-z_]\w*$", token)) and match[2] in FILE_SUFFIXES:
        token = match[1]  # bench/serve_load.py:reference, a function in a file
    if DOTTED.match(token):
        return module_problem(token)
    if "/" not in token or SCHEME.match(token):
        return None
    top = token.split("/", 1)[0]
    is_generated = token.startswith(GENERATED_ROOTS) or token + "/" in GENERATED_ROOTS
    if not is_generated and top not in SOURCE_ROOTS:
        return None
    for path in expand_braces(re.sub(r"<[^<>/]*>", "*", token)):
        path = path.rstrip("/")
        if is_generated and not generated(path):
            return f"{token}: no stage in dvc.yaml or known command writes {path}"
        if not is_generated and not in_checkout(path):
            return f"{token}: {path} does not exist"
    return None


def module_problem(token: str) -> str | None:
    """Why a dotted name in backticks is not one of our modules, or None."""
    module, colon, _ = token.partition(":")
    parts = module.split(".")
    if not colon and parts[-1] in FILE_SUFFIXES:
        return None  # a file name such as digits.onnx, not a module
    wanted = parts if colon else parts[:-1]
    for n in range(len(parts), len(wanted) - 1, -1):
        base = ROOT.joinpath(*parts[:n])
        if base.with_suffix(".py").is_file() or (base / "__init__.py").is_file():
            return None
    return f"{token}: no module {'.'.join(wanted)}"


def code_tokens(text: str, fenced: bool) -> list[str]:
    """The words of a line's code: all of a fenced line, the inline code spans elsewhere."""
    spans = [text] if fenced else [m.group(2) for m in INLINE_CODE.finditer(text)]
    return [t for span in spans for t in TOKEN_SPLIT.split(span) if t]


def rel(doc: Path) -> str:
    """The document's path from the repository root."""
    return str(doc.relative_to(ROOT))


@pytest.mark.parametrize("doc", DOCS, ids=rel)
def test_relative_links_resolve(doc: Path) -> None:
    problems = []
    for number, text, fenced in lines_of(doc):
        if fenced:
            continue
        prose = INLINE_CODE.sub("", text)
        targets = [m.group(1) for m in LINK.finditer(prose)]
        targets += [m.group(1) for m in [REFERENCE.match(prose)] if m]
        problems += [f"{rel(doc)}:{number}: {p}" for t in targets if (p := link_problem(doc, t))]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("doc", DOCS, ids=rel)
def test_paths_in_backticks_exist(doc: Path) -> None:
    problems = []
    for number, text, fenced in lines_of(doc):
        for token in code_tokens(text, fenced):
            if problem := path_problem(token):
                problems.append(f"{rel(doc)}:{number}: {problem}")
    assert not problems, "\n".join(problems)


def test_every_page_is_in_the_index() -> None:
    index = ROOT / "docs" / "index.md"
    linked = {
        (index.parent / m.group(1).partition("#")[0]).resolve()
        for _, text, fenced in lines_of(index)
        if not fenced
        for m in LINK.finditer(text)
    }
    missing = [rel(doc) for doc in DOCS[1:] if doc != index and doc not in linked]
    assert not missing, f"docs/index.md: no link to {', '.join(missing)}"


def test_readme_is_short() -> None:
    count = len((ROOT / "README.md").read_text(encoding="utf-8").splitlines())
    assert count <= README_MAX_LINES, (
        f"README.md:{count}: {count} lines, over {README_MAX_LINES}; move detail to docs/"
    )


@pytest.mark.parametrize(
    ("token", "broken"),
    [
        ("pipeline/stages/train.py", False),
        ("pipeline/stages/<stage>.py", False),
        ("pipeline/no_such_module.py", True),
        ("data/prepared/{train,dev}.npz", False),
        ("models/nothing-writes-this.onnx", True),
        ("reports/figures/*.png", False),
        ("logs/<stage>.json", False),
        ("bench/seed_band.py:main", False),
        ("digits.images.upright", False),
        ("serving.no_such_module:Digits", True),
        ("digits.onnx", False),
        ("s3://bucket/digits/", False),
        ("photos/*.png", False),
    ],
)
def test_path_rule(token: str, broken: bool) -> None:
    assert (path_problem(token) is not None) is broken, path_problem(token)


def test_link_rule() -> None:
    doc = ROOT / "docs" / "index.md"
    assert link_problem(doc, "../README.md#quick-start") is None
    assert link_problem(doc, "https://example.com/missing") is None
    assert "does not exist" in (link_problem(doc, "no-such-page.md") or "")
    assert "no heading" in (link_problem(doc, "../README.md#no-such-heading") or "")
