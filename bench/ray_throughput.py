"""Throughput of `digits score --engine ray` against the local scorer on this machine.

Reads the ONNX model (default models/digits.onnx; when missing, the random 784-512-256-10 MLP
of bench/score_throughput.py) and data/raw/t10k-images-idx3-ubyte (when missing, 10,000
tests/conftest.make_digits images). Tiles them into a 1,000,000-image IDX file and a Parquet file
in a temp dir, scores each to Parquet with the local scorer and with Ray (a one-node cluster on
127.0.0.1 with this machine's CPUs, one actor per CPU), and samples the peak summed PSS of every
process involved (the shared object store counts once). Writes bench/results/ray_throughput.json
and prints one summary line.
Run: `python bench/ray_throughput.py [--model PATH] [--images 1000000]` (needs digits[ray]).
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import click
import numpy as np
import psutil
import pyarrow as pa
import pyarrow.parquet as pq
from score_throughput import write_mlp_onnx, write_tiled_idx

ROOT = Path(__file__).resolve().parent.parent
TEST_IMAGES = ROOT / "data/raw/t10k-images-idx3-ubyte"
RAY = Path(sys.executable).parent / "ray"
MARK = "DIGITS_RAY_BENCH"
ROW_GROUP = 1 << 16


def test_images() -> tuple[np.ndarray, str]:
    """The MNIST test images (N, 784) uint8, or generated stand-ins, and which they are."""
    if TEST_IMAGES.is_file():
        data = np.frombuffer(TEST_IMAGES.read_bytes(), np.uint8, offset=16)
        return data.reshape(-1, 784), "mnist"
    sys.path.insert(0, str(ROOT))
    from tests.conftest import make_digits

    return make_digits(10_000, seed=0)[0].reshape(-1, 784), "make_digits"


def write_tiled_parquet(path: Path, images: np.ndarray, n: int) -> Path:
    """A Parquet file of n images (`pixels`: 784 uint8 per row), written a row group at a time."""
    tiles = np.resize(images, (ROW_GROUP, 784))  # repeat the set to one row group's worth
    schema = pa.schema([("pixels", pa.list_(pa.uint8(), 784))])
    with pq.ParquetWriter(path, schema) as writer:
        for start in range(0, n, ROW_GROUP):
            rows = tiles[: min(ROW_GROUP, n - start)]
            pixels = pa.FixedSizeListArray.from_arrays(pa.array(rows.reshape(-1)), 784)
            writer.write_table(pa.table({"pixels": pixels}, schema=schema))
    return path


def marked(token: str) -> set[psutil.Process]:
    """The bench cluster's processes: those with its marker, and their descendants."""
    found = set()
    for proc in psutil.process_iter():
        with contextlib.suppress(psutil.Error):
            if proc.environ().get(MARK) == token:
                found |= {proc, *proc.children(recursive=True)}
    return found


@contextlib.contextmanager
def ray_cluster(cpus: int, temp: Path) -> Iterator[tuple[str, dict[str, str], str]]:
    """A one-node Ray on 127.0.0.1 in its own temp dir; yields address, env, marker token."""
    token, port = uuid.uuid4().hex, 6400 + os.getpid() % 1000
    env = {**os.environ, MARK: token, "RAY_USAGE_STATS_ENABLED": "0", "PYTHONPATH": str(ROOT)}
    env |= {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": uuid.uuid4().hex * 2}
    command = [str(RAY), "start", "--head", f"--port={port}", "--node-ip-address=127.0.0.1"]
    command += [f"--num-cpus={cpus}", "--include-dashboard=false", f"--temp-dir={temp}"]
    command += ["--object-store-memory=1000000000"]
    try:
        subprocess.run(command, env=env, check=True, capture_output=True, timeout=180)
        yield f"127.0.0.1:{port}", env, token
    finally:  # only this cluster's processes: `ray stop` would end every Ray on the machine
        procs: set[psutil.Process] = set()
        while new := marked(token) - procs:
            procs |= new
            for proc in new:
                with contextlib.suppress(psutil.Error):
                    proc.terminate()
            time.sleep(1)
        _, alive = psutil.wait_procs(procs, timeout=15)
        for proc in alive:
            with contextlib.suppress(psutil.Error):
                proc.kill()


def tree_pss_mib(pids: list[int]) -> float:
    """Summed PSS of these processes and their descendants (shared object store split once)."""
    procs: dict[int, psutil.Process] = {}
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            proc = psutil.Process(pid)
            procs |= {p.pid: p for p in (proc, *proc.children(recursive=True))}
    total = 0
    for proc in procs.values():
        with contextlib.suppress(psutil.Error):
            total += proc.memory_full_info().pss
    return total / 2**20


def run_score(args: list[str], env: dict[str, str], output: Path, extra: list[int]) -> dict:
    """`digits score` from this checkout in a subprocess: seconds, images/s, peak summed PSS."""
    command = [sys.executable, "-c", "from digits.cli import main; main()", "score", *args]
    started, peak = time.perf_counter(), 0.0
    proc = subprocess.Popen([*command, "-o", str(output), "-q", "--provider", "cpu"], env=env)
    while proc.poll() is None:
        peak = max(peak, tree_pss_mib([proc.pid, *extra]))
        time.sleep(0.25)  # reading PSS walks every mapping: keep the sampling cheap
    seconds = time.perf_counter() - started
    if proc.returncode:
        raise click.ClickException(f"digits score {' '.join(args)} failed")
    rows = pq.read_metadata(output).num_rows if output.is_file() else pq.read_table(output).num_rows
    return {"images": rows, "seconds": round(seconds, 2), "images_per_s": round(rows / seconds),
            "peak_pss_mib": round(peak)}  # fmt: skip


def median_run(runs: list[dict]) -> dict:
    """The run with the median rate, with every round's rate and the highest peak beside it."""
    ranked = sorted(runs, key=lambda r: r["images_per_s"])
    middle = dict(ranked[len(ranked) // 2])
    middle["rounds_images_per_s"] = [r["images_per_s"] for r in runs]
    middle["peak_pss_mib"] = max(r["peak_pss_mib"] for r in runs)
    return middle


@click.command()
@click.option("--model", type=click.Path(path_type=Path), default=ROOT / "models/digits.onnx")
@click.option("--images", default=1_000_000, show_default=True, help="Images per input file.")
@click.option("--rounds", default=3, show_default=True, help="Alternating rounds; medians count.")
def main(model: Path, images: int, rounds: int) -> None:
    """Score the same images with the local scorer and with Ray; write the JSON result."""
    cpus = len(os.sched_getaffinity(0))
    test, source = test_images()
    raw: dict[str, list[dict]] = {}
    with tempfile.TemporaryDirectory(prefix="raybench", dir="/tmp") as tmp_name:
        tmp = Path(tmp_name)
        used = model if model.is_file() else write_mlp_onnx(tmp / "mlp.onnx")
        inputs = {
            "idx": write_tiled_idx(tmp / "big-images-idx3-ubyte", test, images),
            "parquet": write_tiled_parquet(tmp / "big.parquet", test, images),
        }
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        # The machine is shared: alternate the engines round by round and keep the medians.
        with ray_cluster(cpus, tmp / "ray") as (address, ray_env, token):
            cluster = [p.pid for p in marked(token)]
            for _ in range(rounds):
                for kind, path in inputs.items():
                    out = tmp / f"local-{kind}.parquet"
                    run = run_score([str(used), str(path)], env, out, [])
                    raw.setdefault(f"local_{kind}", []).append(run)
                    args = [str(used), str(path), "--engine", "ray", "--ray-address", address]
                    args += ["--actors", str(cpus), "--batch-size", "4096"]
                    run = run_score(args, ray_env, tmp / f"ray-{kind}.parquet", cluster)
                    raw.setdefault(f"ray_{kind}", []).append(run)
            # Ray's fixed cost per job (connect, start the actors, load the model, commit):
            # scoring 1,000 images is nearly all of it.
            small = tmp / "small.npy"
            np.save(small, test[:1000])
            args = [str(used), str(small), "--engine", "ray", "--ray-address", address]
            fixed = [run_score([*args, "--actors", str(cpus)], ray_env, tmp / "s.parquet", [])]
            fixed += [run_score([*args, "--actors", str(cpus)], ray_env, tmp / "s.parquet", [])]
    runs = {name: median_run(rs) for name, rs in raw.items()}
    ratio = {k: round(runs[f"ray_{k}"]["images_per_s"] / runs[f"local_{k}"]["images_per_s"], 3)
             for k in inputs}  # fmt: skip
    per_actor = max(runs[f"ray_{k}"]["images_per_s"] for k in inputs) / cpus
    fixed_s = min(r["seconds"] for r in fixed)
    # Past the fixed cost, what each actor sustains: what one more node's CPUs would add.
    steady = max(images / (runs[f"ray_{k}"]["seconds"] - fixed_s) for k in inputs) / cpus
    result = {
        "model": str(model) if model.is_file() else "784-512-256-10 ReLU MLP (random weights)",
        "images_source": source,
        "cpus": cpus,
        "actors": cpus,
        "runs": runs,
        "ray_to_local": ratio,
        "ray_images_per_s_per_actor": round(per_actor),
        "ray_fixed_seconds_per_job": fixed_s,
        "ray_steady_images_per_s_per_actor": round(steady),
        "projected_images_per_s_per_added_node": {
            f"{c}_cpus": round(steady * c) for c in (2, 8, 32)
        },
        "load_average_1m_after": round(os.getloadavg()[0], 2),
    }
    out = ROOT / "bench/results/ray_throughput.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    rates = ", ".join(
        f"{k} {r['images_per_s']:,}/s {r['peak_pss_mib']} MiB" for k, r in runs.items()
    )
    click.echo(
        f"score {images:,} images on {cpus} CPUs: {rates}; ray/local idx "
        f"{ratio['idx']:.2f}x, parquet {ratio['parquet']:.2f}x; {round(per_actor):,}/s per actor "
        f"({round(steady):,}/s past Ray's {fixed_s:.1f} s fixed cost per job)"
    )


if __name__ == "__main__":
    main()
