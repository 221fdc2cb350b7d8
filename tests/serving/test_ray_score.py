"""digits score --engine ray on a real two-node Ray cluster, against the local scorer's output.

Starts a head node and a second worker node process on 127.0.0.1 (own temp dir, small object
stores, no dashboard, no usage stats), scores a few thousand images with a corrupt one among
them through both engines, and stops every process the cluster started.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import psutil
import pytest
from PIL import Image

from digits.idx import encode_idx
from tests.conftest import make_digits, write_linear_onnx
from tests.serving.conftest import free_port

pytest.importorskip("ray")
pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

ROOT = Path(__file__).resolve().parents[2]
RAY = Path(sys.executable).parent / "ray"
MARK = "DIGITS_RAY_TEST"  # set in every process the cluster starts, so teardown finds them all
pytestmark = pytest.mark.slow


def cluster_processes(token: str) -> set[psutil.Process]:
    """Processes carrying this cluster's marker, and all their descendants."""
    found = set()
    for proc in psutil.process_iter():
        try:
            if proc.environ().get(MARK) == token:
                # Agents rewrite their environ block with their title; they are the raylet's
                # children, so take each marked process's whole tree while it is intact.
                found |= {proc, *proc.children(recursive=True)}
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def stop_cluster(token: str) -> list[psutil.Process]:
    """Terminate this cluster's processes (only them: `ray stop` would end every Ray here)."""
    procs: set[psutil.Process] = set()
    deadline = time.monotonic() + 30
    # Repeat: a raylet that is being stopped may still spawn a worker or agent a moment later.
    while (new := cluster_processes(token) - procs) and time.monotonic() < deadline:
        procs |= new
        for proc in new:
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.terminate()
        time.sleep(1)
    _, alive = psutil.wait_procs(procs, timeout=5)
    for proc in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.kill()
    psutil.wait_procs(alive, timeout=5)
    return [p for p in procs | cluster_processes(token) if p.is_running()]


def start(env: dict[str, str], *command: str) -> None:
    """Run `ray start ...`; on failure, fail with the end of its output."""
    done = subprocess.run(command, env=env, timeout=120, capture_output=True, text=True)
    if done.returncode:
        pytest.fail(f"{' '.join(command[:3])} failed:\n{done.stderr[-2000:]}")


@pytest.fixture(scope="module")
def cluster() -> Iterator[tuple[str, dict[str, str]]]:
    """A head and a worker node on this machine; yields the address and the env to reach it."""
    token, port = uuid.uuid4().hex, free_port()
    temp = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # short: Ray's socket paths are limited
    env = {**os.environ, MARK: token, "RAY_USAGE_STATS_ENABLED": "0", "PYTHONPATH": str(ROOT)}
    # Ray turns token authentication on by default; give every node and driver the same token.
    env |= {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": uuid.uuid4().hex * 2}
    small = ["--node-ip-address=127.0.0.1", "--num-cpus=1", "--object-store-memory=100000000"]
    head = [str(RAY), "start", "--head", f"--port={port}", "--include-dashboard=false"]
    try:
        start(env, *head, *small, f"--temp-dir={temp}")
        start(env, str(RAY), "start", f"--address=127.0.0.1:{port}", *small)
        yield f"127.0.0.1:{port}", env
    finally:
        left = stop_cluster(token)
        shutil.rmtree(temp, ignore_errors=True)
        assert not left, f"Ray processes left behind: {left}"


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> tuple[Path, list[Path]]:
    """A model, and a few thousand images in IDX (labels beside), Parquet, .npy and PNGs."""
    d = tmp_path_factory.mktemp("inputs")
    x, y = make_digits(3000, seed=7)
    (d / "t10k-images-idx3-ubyte").write_bytes(encode_idx(x[:2000]))
    (d / "t10k-labels-idx1-ubyte").write_bytes(encode_idx(y[:2000]))
    pixels = pa.FixedSizeListArray.from_arrays(pa.array(x[2000:2800].reshape(-1)), 784)
    pq.write_table(pa.table({"pixels": pixels, "label": y[2000:2800]}), d / "more.parquet")
    np.save(d / "extra.npy", x[2800:2980].astype(np.float32))
    pngs = d / "pngs"
    pngs.mkdir()
    for i, image in enumerate(x[2980:]):
        Image.fromarray(image.reshape(28, 28)).save(pngs / f"{i:02d}.png")
    (pngs / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(40))  # the bad one
    Image.new("L", (40, 40), 255).save(pngs / "blank.png")  # no digit: a reason, no digit
    model = write_linear_onnx(d / "linear.onnx")
    return model, [d / "t10k-images-idx3-ubyte", d / "more.parquet", d / "extra.npy", pngs]


def digits_score(
    *args: object, env: dict[str, str] | None = None, first: str = ""
) -> subprocess.CompletedProcess:
    """`digits score ... --provider cpu` from this checkout, in a subprocess (`first` runs
    before the command, in its process)."""
    command = [sys.executable, "-c", f"{first}from digits.cli import main; main()", "score"]
    command += [*map(str, args), "--provider", "cpu"]
    env = env or {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)


def read_scores(path: Path) -> dict[str, np.ndarray]:
    """A Parquet output (file or directory of parts) as columns, rows sorted by source."""
    table = pq.read_table(path)
    table = table.take(pa.compute.sort_indices(table, [("source", "ascending")]))
    return {name: table.column(name).to_numpy(zero_copy_only=False) for name in table.column_names}


def test_ray_engine_matches_the_local_scorer(cluster, inputs, tmp_path: Path) -> None:
    address, env = cluster
    model, args = inputs
    local = digits_score(model, *args, "-o", tmp_path / "local.parquet", "--probabilities",
                         "--skip-bad")  # fmt: skip
    assert local.returncode == 0, local.stderr
    out = tmp_path / "ray.parquet"
    remote = digits_score(model, *args, "-o", out, "--probabilities", "--skip-bad",
                          "--engine", "ray", "--ray-address", address, "--actors", "2",
                          "--batch-size", "256", env=env)  # fmt: skip
    assert remote.returncode == 0, remote.stderr
    expected, got = read_scores(tmp_path / "local.parquet"), read_scores(out)
    assert len(expected["source"]) == 3001 and list(got) == list(expected)
    assert (got["source"] == expected["source"]).all()
    assert np.array_equal(got["digit"], expected["digit"], equal_nan=True)  # NaN: no digit
    assert (got["reason"] == expected["reason"]).all()
    assert (got["low_confidence"] == expected["low_confidence"]).all()
    assert sum(r is not None for r in got["reason"]) == 1  # the blank picture
    for name in ["confidence"] + [f"p{k}" for k in range(10)]:
        np.testing.assert_allclose(got[name], expected[name], rtol=0, atol=1e-6)
    for result in (local, remote):
        assert "skipped 1 bad input(s)" in result.stderr and "corrupt.png" in result.stderr
    # Labels beside the IDX file and in the Parquet column reach the same summary.
    assert remote.stdout.splitlines()[1:] == local.stdout.splitlines()[1:]
    assert all(p.name.startswith("part-") for p in out.iterdir())


def test_ray_engine_stops_at_a_bad_input_and_writes_nothing(cluster, inputs, tmp_path) -> None:
    address, env = cluster
    model, args = inputs
    out = tmp_path / "ray.csv"
    result = digits_score(model, *args, "-o", out, "--engine", "ray", "--ray-address", address,
                          env=env)  # fmt: skip
    assert result.returncode == 1, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "corrupt.png" in errors[0], result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    assert not out.exists() and not list(tmp_path.glob(".ray.csv.*"))


def test_ray_engine_reads_and_writes_filesystem_uris(cluster, inputs, tmp_path: Path) -> None:
    address, env = cluster
    model, args = inputs
    out = f"file://{tmp_path}/uri.csv"
    result = digits_score(model, f"file://{args[0]}", "-o", out, "--engine", "ray",
                          "--ray-address", address, env=env)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "/2000 labelled images)" in result.stdout
    written = sorted((tmp_path / "uri.csv").iterdir())
    assert written[0].name == "_SUCCESS"  # no atomic rename on object stores: a marker instead
    lines = [line for p in written[1:] for line in p.read_text().splitlines()[1:]]
    assert len(lines) == 2000 and all(str(args[0]) in line for line in lines)
    again = digits_score(model, f"file://{args[0]}", "-o", out, "--engine", "ray",
                         "--ray-address", address, env=env)  # fmt: skip
    assert again.returncode == 1 and "not empty" in again.stderr


def test_large_files_are_read_in_pieces_that_add_up_to_the_local_output(
    cluster, inputs, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:  # pieces of 512 rows here (the default is 32,768): the driver's plan, then the scores
    from pyarrow import fs as pafs

    from serving.scoring import ray_engine

    address, env = cluster
    model, (images, parquet, *_) = inputs
    grouped = tmp_path / "grouped.parquet"
    pq.write_table(pq.read_table(parquet), grouped, row_group_size=200)
    monkeypatch.setattr(ray_engine, "PIECE_ROWS", 512)  # planned on the driver: this process
    local_fs = pafs.LocalFileSystem()
    planned = ray_engine.plan_pieces(local_fs, str(images), images)
    assert [(p.start, p.stop) for p in planned] == [
        (0, 512),
        (512, 1024),
        (1024, 1536),
        (1536, 2000),
    ]
    planned = ray_engine.plan_pieces(local_fs, str(grouped), grouped)
    assert [(p.start, p.stop, p.groups) for p in planned] == [(0, 600, (0, 1, 2)), (600, 800, (3,))]
    whole = [ray_engine.Piece(str(parquet))]
    assert ray_engine.plan_pieces(local_fs, str(parquet), parquet) == whole

    args = [model, images, grouped, "-o"]
    local = digits_score(*args, tmp_path / "local.parquet", "--probabilities")
    assert local.returncode == 0, local.stderr
    # In the driver, which plans: pieces of 512 rows, each one's rows told on stderr.
    small = (
        "import sys, serving.scoring.ray_engine as r; r.PIECE_ROWS = 512; plan = r.plan_pieces; "
        "r.plan_pieces = lambda *a: [print('piece', p.stop, file=sys.stderr) or p "
        "for p in plan(*a)]; "
    )
    remote = digits_score(*args, tmp_path / "ray.parquet", "--probabilities", "--engine", "ray",
                          "--ray-address", address, "--actors", "2", "--batch-size", "256",
                          env=env, first=small)  # fmt: skip
    assert remote.returncode == 0, remote.stderr
    stops = [line.split()[1] for line in remote.stderr.splitlines() if line.startswith("piece ")]
    assert len(stops) == 6 and "None" not in stops  # row ranges: 4 of the IDX, 2 of Parquet
    expected, got = read_scores(tmp_path / "local.parquet"), read_scores(tmp_path / "ray.parquet")
    assert (got["source"] == expected["source"]).all() and len(set(got["source"])) == 2800
    # The actors write a part file per piece they score, so none overwrote another's.
    assert len(list((tmp_path / "ray.parquet").glob("part-*.parquet"))) == 6
    assert np.array_equal(got["digit"], expected["digit"], equal_nan=True)
    for name in ["confidence"] + [f"p{k}" for k in range(10)]:
        np.testing.assert_allclose(got[name], expected[name], rtol=0, atol=1e-6)
    # The labels beside the IDX file and in the Parquet column, each row counted once.
    assert remote.stdout.splitlines()[1:] == local.stdout.splitlines()[1:]


NOISE = re.compile(r"ERROR|WARNING|Warning| [EW] \d+ \d+\]")  # Python's and Ray's C++ logs


def test_a_clean_job_says_no_error_or_warning(cluster, inputs, tmp_path: Path) -> None:
    address, env = cluster
    model, (images, parquet, npy, _) = inputs  # the pictures, with their corrupt one, stay out
    for quiet in ([], ["-q"]):
        out = tmp_path / f"clean{len(quiet)}.csv"
        result = digits_score(model, images, parquet, npy, "-o", out, "--engine", "ray",
                              "--ray-address", address, *quiet, env=env)  # fmt: skip
        assert result.returncode == 0, result.stderr
        said = (result.stdout + result.stderr).splitlines()
        assert [line for line in said if NOISE.search(line)] == [], result.stderr
        assert sum(len(p.read_text().splitlines()) - 1 for p in out.iterdir()) == 2980
