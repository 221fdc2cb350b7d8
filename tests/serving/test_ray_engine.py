"""The Ray engine's parts that need no cluster: the stderr filter, the read plans, the totals.

Imports ray_engine (the `ray` extra), starts no Ray; writes only pytest's temp dirs.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("ray")
pytest.importorskip("pyarrow")

ROOT = Path(__file__).resolve().parents[2]


def test_stderr_loses_only_the_marked_lines() -> None:
    # fd 2 itself, as Ray's C++ logger writes it: run in a child whose stderr we read.
    code = (
        "import os, sys\n"
        "from serving.scoring.ray_engine import stderr_without\n"
        "with stderr_without(b'false alarm'):\n"
        "    os.write(2, b'kept 1\\n[E] a false alarm line\\nkept 2\\r')\n"
        "    print('kept 3', file=sys.stderr)\n"
        "    os.write(2, b'half ')\n"
        "os.write(2, b'after\\n')\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stderr == b"kept 1\nkept 2\rkept 3\nhalf after\n"


def test_image_files_are_read_in_groups_of_a_batch(tmp_path: Path) -> None:
    from serving.scoring.ray_engine import Piece, batched, piece_size

    names = [str(tmp_path / f"{i}.png") for i in range(5)]
    groups = [Piece(g[0], images=tuple(g)) for g in batched(names, 2)]
    assert [len(p.images) for p in groups] == [2, 2, 1]
    assert groups[0].files == tuple(names[:2]) and groups[2].files == (names[4],)
    assert groups[0].path == names[0] and Piece("big", 0, 10).files == ("big",)
    assert piece_size(groups[0], dict.fromkeys(names, 100), {}) == 200
    split = Piece("big", 65536, 131072)
    assert piece_size(split, {"big": 1000}, {"big": 262144}) == 250


def test_a_blocks_part_file_is_named_by_its_first_row(tmp_path: Path) -> None:
    # A retried block must rewrite its own file, never add a second copy of its rows.
    import pyarrow as pa
    from pyarrow import fs as pafs

    from serving.scoring.ray_engine import PartFiles

    parts = PartFiles(pafs.LocalFileSystem(), str(tmp_path), "csv", False, 0.5)
    block = pa.table({"source": pa.array([b"a.npy:0", b"a.npy:1"], pa.binary())})
    again = pa.table({"source": pa.array([b"a.npy:0", b"a.npy:1"], pa.binary())})
    other = pa.table({"source": pa.array([b"a.npy:2"], pa.binary())})
    assert parts.path(block) == parts.path(again) != parts.path(other)
    assert parts.path(block).startswith(f"{tmp_path}/part-") and parts.path(block).endswith(".csv")


def test_totals_rows_add_up_to_the_totals_they_carry() -> None:
    import numpy as np
    import pyarrow as pa

    from serving.scoring.ray_engine import add_rows, totals_row
    from serving.scoring.summary import Totals, no_counts

    first, second = no_counts(), no_counts()
    first[3, 3], second[3, 5], second[7, 10] = 4, 1, 2
    rows = pa.concat_tables(
        [totals_row(Totals(5, first, [])), totals_row(Totals(3, second, ["bad.png: corrupt"]))]
    )
    totals = Totals()
    add_rows(totals, rows)
    assert totals.rows == 8 and totals.skipped == ["bad.png: corrupt"]
    assert np.array_equal(totals.matrix, first + second)


def test_a_uri_directory_gives_the_files_the_engine_reads_and_a_bad_uri_names_itself(
    tmp_path: Path,
) -> None:
    import numpy as np

    from serving.scoring.inputs import InputError
    from serving.scoring.ray_engine import plan_inputs

    (tmp_path / "sub").mkdir()
    for name in ("b.npy", "a.npy", "sub/c.npy"):
        np.save(tmp_path / name, np.zeros((2, 784), np.uint8))
    (tmp_path / "notes.csv").write_text("pixels\n")  # .csv is the local engine's alone
    planned = plan_inputs([f"file://{tmp_path}"], None)
    assert list(planned.sizes) == [str(tmp_path / "a.npy"), str(tmp_path / "b.npy")]
    assert planned.sizes[str(tmp_path / "a.npy")] == (tmp_path / "a.npy").stat().st_size
    with pytest.raises(InputError, match=f"file://{tmp_path}/missing.npy: no such file"):
        plan_inputs([f"file://{tmp_path}/missing.npy"], None)
    skipped: list[str] = []
    planned = plan_inputs([f"nowhere://{tmp_path}/a.npy", str(tmp_path / "b.npy")], skipped)
    assert list(planned.names.values()) == [str(tmp_path / "b.npy")]
    assert len(skipped) == 1 and skipped[0].startswith(f"nowhere://{tmp_path}/a.npy: ")


def test_each_read_task_reads_its_own_files_and_carries_no_one_elses(tmp_path: Path) -> None:
    # A task ships to a worker with its reader: the whole plan in each would grow as files².
    import pickle

    from PIL import Image

    from serving.scoring.ray_engine import DigitsDatasource, plan_inputs

    def tasks_of(pictures: int) -> list:
        for i in range(pictures):
            Image.new("L", (28, 28), 255 * (i % 2)).save(tmp_path / f"{i}.png")
        (tmp_path / f"{pictures}.png").write_bytes(b"not a picture")
        return DigitsDatasource(plan_inputs([str(tmp_path)], None), 2, True).get_read_tasks(1)

    tasks = tasks_of(5)
    assert [len(task.read_fn.inputs.sizes) for task in tasks] == [2, 2, 2]
    assert [task.metadata.input_files for task in tasks][2] == tuple(
        str(tmp_path / f"{i}.png") for i in (4, 5)
    )
    bad, good = list(tasks[2]())  # a bad file, skipped, is a row of its own
    assert bad.column("error").to_pylist()[0].startswith(f"{tmp_path}/5.png: ")
    assert good.column("source").to_pylist() == [f"{tmp_path}/4.png".encode()]
    first = len(pickle.dumps(tasks[0]))
    assert len(pickle.dumps(tasks_of(40)[0])) == first  # eight times the plan, the same task
