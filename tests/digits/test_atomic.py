"""Atomic writes: ownership refusals, the windowless swap, and interruption at every step."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import digits.atomic as atomic
from digits.atomic import NotOwnedError, atomic_dir, atomic_open, atomic_path, exchange

ROOT = Path(__file__).resolve().parents[2]
OLD = {"a.txt": "old a", "old.txt": "only in the old output"}
NEW = {"a.txt": "new a", "b.txt": "new b", "c.txt": "new c"}
OWNS = ("*.txt",)


def fill(directory: Path, files: dict[str, str]) -> Path:
    """Write `files` ({name: text}) into `directory`, creating it."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (directory / name).write_text(text)
    return directory


def snapshot(directory: Path) -> dict[str, str] | None:
    """{name: text} of a directory, or None when it is missing."""
    if not directory.exists():
        return None
    return {p.name: p.read_text() for p in directory.iterdir()}


def hidden_beside(target: Path) -> list[str]:
    """Temp and backup names atomic_dir may leave beside `target`."""
    return sorted(p.name for p in target.parent.glob(f".{target.name}.*"))


def write_new(target: Path, owns: tuple[str, ...] = OWNS) -> None:
    """Replace `target` with the NEW files."""
    with atomic_dir(target, owns, "the test") as tmp:
        fill(tmp, NEW)


# --- ownership ---------------------------------------------------------------------------


@pytest.mark.parametrize("existing", [None, {}, OLD])
def test_missing_empty_or_owned_target_is_replaced_whole(tmp_path, existing):
    target = tmp_path / "out"
    if existing is not None:
        fill(target, existing)
    write_new(target)
    assert snapshot(target) == NEW  # old.txt is gone: the directory is swapped, not merged
    assert hidden_beside(target) == []


def test_owned_names_may_be_exact_names_or_patterns(tmp_path):
    target = fill(tmp_path / "out", {"train.npz": "", "confusion_dense.json": "", "keep.md": ""})
    owns = ("train.npz", "confusion_*.json")
    with pytest.raises(NotOwnedError, match=r"\(keep\.md\)"):
        write_new(target, owns)
    (target / "keep.md").unlink()
    write_new(target, ("train.npz", "confusion_*.json", "?.txt"))
    assert snapshot(target) == NEW


def test_foreign_file_is_refused_before_the_block_runs_and_left_alone(tmp_path):
    target = fill(tmp_path / "data", {"train.npz": "mine"})
    (target / "raw").mkdir()
    (target / "raw" / "precious").write_text("not yours")
    ran = False
    with pytest.raises(NotOwnedError) as caught:
        with atomic_dir(target, ("train.npz",), "digits prepare"):
            ran = True
    assert str(caught.value) == (
        f"{target}: holds files digits prepare did not write (raw); "
        "choose an empty or new directory"
    )
    assert not ran
    assert (target / "raw" / "precious").read_text() == "not yours"
    assert (target / "train.npz").read_text() == "mine"
    assert hidden_beside(target) == []


def test_many_foreign_files_are_named_three_and_counted(tmp_path):
    target = fill(tmp_path / "out", {f"{i}.md": "" for i in range(5)})
    with pytest.raises(NotOwnedError, match=r"\(0\.md, 1\.md, 2\.md and 2 more\)"):
        write_new(target)


def test_symlinked_target_is_refused_and_neither_link_nor_directory_changes(tmp_path):
    real = fill(tmp_path / "real", OLD)
    link = tmp_path / "out"
    link.symlink_to(real, target_is_directory=True)
    with pytest.raises(NotOwnedError, match="out: is a symlink"):
        write_new(link)
    assert link.is_symlink() and snapshot(real) == OLD


def test_file_as_target_is_refused_and_kept(tmp_path):
    target = tmp_path / "out"
    target.write_text("a file")
    with pytest.raises(NotOwnedError, match="out: is a file"):
        write_new(target)
    assert target.read_text() == "a file"
    assert hidden_beside(target) == []


def test_foreign_file_that_appears_during_the_block_stops_the_swap(tmp_path):
    target = fill(tmp_path / "out", OLD)
    with pytest.raises(NotOwnedError, match=r"\(late\.md\)"):
        with atomic_dir(target, OWNS) as tmp:
            fill(tmp, NEW)
            (target / "late.md").write_text("someone else's")
    assert snapshot(target) == {**OLD, "late.md": "someone else's"}
    assert hidden_beside(target) == []


# --- the swap --------------------------------------------------------------------------------


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="renameat2 is Linux-only")
def test_exchange_swaps_two_directories_in_one_step(tmp_path):
    a, b = fill(tmp_path / "a", OLD), fill(tmp_path / "b", NEW)
    assert exchange(a, b)
    assert snapshot(a) == NEW and snapshot(b) == OLD


def test_exchange_reports_an_error_other_than_unsupported(tmp_path):
    if atomic.libc_renameat2() is None:
        pytest.skip("no renameat2 here")
    with pytest.raises(FileNotFoundError):
        exchange(tmp_path / "absent", fill(tmp_path / "b", NEW))


def test_without_renameat2_the_fallback_replaces_the_directory(tmp_path, monkeypatch):
    monkeypatch.setattr(atomic, "libc_renameat2", lambda: None)
    target = fill(tmp_path / "out", OLD)
    write_new(target)
    assert snapshot(target) == NEW and hidden_beside(target) == []


SCENARIOS = {"absent": (None, False), "exchange": (OLD, False), "fallback": (OLD, True)}


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_a_failing_step_leaves_the_old_output_and_no_temp(tmp_path, monkeypatch, scenario):
    old, fallback = SCENARIOS[scenario]
    if fallback:
        monkeypatch.setattr(atomic, "exchange", lambda a, b: False)
    calls = {"n": 0, "fail_at": 0}

    def failing(function):
        def call(*args, **kwargs):
            calls["n"] += 1
            if calls["n"] == calls["fail_at"]:
                raise OSError("injected failure")
            return function(*args, **kwargs)

        return call

    for name in ("rename", "chmod"):
        monkeypatch.setattr(os, name, failing(getattr(os, name)))
    monkeypatch.setattr(atomic, "exchange", failing(atomic.exchange))
    target = tmp_path / "out"
    for fail_at in range(1, 20):
        if old is not None:
            fill(target, old)
        calls.update(n=0, fail_at=fail_at)
        try:
            write_new(target)
        except OSError:
            assert snapshot(target) == old, f"step {fail_at}"
            assert hidden_beside(target) == [], f"step {fail_at}"
            continue
        assert snapshot(target) == NEW and hidden_beside(target) == []
        break
    else:
        pytest.fail("the write never got past the injected failures")


# A child process that replaces `target` with NEW and SIGKILLs itself before its k-th step:
# each mutating os call, the exchange, and each file written inside the block.
CHILD = """
import json, os, signal, sys
from pathlib import Path
import digits.atomic as atomic

target, kill_at, fallback, new = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1", sys.argv[4]
steps = 0

def step():
    global steps
    steps += 1
    if steps == kill_at:
        os.kill(os.getpid(), signal.SIGKILL)

def counted(function):
    def call(*args, **kwargs):
        step()
        return function(*args, **kwargs)
    return call

for name in ("mkdir", "rename", "replace", "chmod", "unlink", "rmdir"):
    setattr(os, name, counted(getattr(os, name)))
atomic.exchange = (lambda a, b: False) if fallback else counted(atomic.exchange)
with atomic.atomic_dir(target, ("*.txt",)) as tmp:
    for name, text in json.loads(new).items():
        step()
        (tmp / name).write_text(text)
"""


def run_killed_at(target: Path, kill_at: int, fallback: bool) -> bool:
    """Run CHILD; True when it was killed, False when it finished."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    args = [str(target), str(kill_at), str(int(fallback)), json.dumps(NEW)]
    done = subprocess.run(
        [sys.executable, "-c", CHILD, *args], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode in (0, -signal.SIGKILL), done.stderr
    return done.returncode == -signal.SIGKILL


@pytest.mark.skipif(sys.platform == "win32", reason="needs SIGKILL")
@pytest.mark.parametrize("scenario", SCENARIOS)
def test_a_kill_at_any_step_leaves_the_old_output_or_the_new_one_whole(tmp_path, scenario):
    old, fallback = SCENARIOS[scenario]
    windows = 0
    for kill_at in range(1, 40):
        run_dir = tmp_path / str(kill_at)
        target = run_dir / "out"
        if old is not None:
            fill(target, old)
        killed = run_killed_at(target, kill_at, fallback)
        seen = snapshot(target)
        if seen is None and old is not None:
            # Only the fallback has this window, and the old output is whole beside the target.
            windows += 1
            backups = [snapshot(run_dir / name) for name in hidden_beside(target)]
            assert OLD in backups, f"step {kill_at}: old output lost"
        else:
            assert seen in (old, NEW), f"step {kill_at}: {seen}"
        write_new(target)  # and the next run recovers
        assert snapshot(target) == NEW
        if not killed:
            break
    else:
        pytest.fail("the child never finished")
    assert kill_at > 5  # it really was interrupted at several steps
    assert windows == (1 if fallback else 0)


# --- files -----------------------------------------------------------------------------------


def test_atomic_path_replaces_the_file_and_leaves_no_temp_on_failure(tmp_path):
    target = tmp_path / "out.json"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("interrupted")
    assert target.read_text() == "old" and hidden_beside(target) == []
    with atomic_path(target) as tmp:
        tmp.write_text("new")
    assert target.read_text() == "new" and hidden_beside(target) == []


def test_atomic_open_writes_through_an_open_file_with_the_umask_mode(tmp_path):
    target = tmp_path / "sub" / "rows.csv"
    with atomic_open(target, buffering=1 << 20) as out:
        out.write(b"source,digit\n")
        assert not target.exists()  # nothing visible until the block completes
    assert target.read_bytes() == b"source,digit\n"
    assert target.stat().st_mode & 0o777 == atomic.umask_mode(0o666)
    with pytest.raises(RuntimeError):
        with atomic_open(target) as out:
            out.write(b"half")
            raise RuntimeError("interrupted")
    assert target.read_bytes() == b"source,digit\n" and hidden_beside(target) == []
