"""Throughput of `digits score --engine ray` against the local scorer on this machine.

Reads the ONNX model (default models/digits.onnx; when missing, the random 784-512-256-10 MLP
of bench/score_throughput.py) and data/raw/t10k-images-idx3-ubyte (when missing, 10,000
tests/conftest.make_digits images). Tiles them into IDX and Parquet files of two sizes (default
1M and 3M images) in a temp dir and scores each to Parquet with the local scorer and with Ray (a
one-node cluster on 127.0.0.1 with this machine's CPUs, one actor per CPU), run by run in
alternating rounds. Reports medians over rounds: each engine's steady-state rate (the slope
between the two sizes, so fixed costs drop out) per core / per actor and their ratio, Ray's
fixed cost per job (a 1,000-image job), the peak summed PSS of every process involved (the
shared object store counts once; also less the cluster at rest), and every ERROR or WARNING
line the commands printed. Writes bench/results/ray_throughput.json and prints a summary.
Run: `python bench/ray_throughput.py [--model PATH] [--images 1000000] [--large 3000000]`
(needs digits[ray]).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
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
NOISE = re.compile(r"ERROR|WARNING|Warning| E \d+ \d+\]| W \d+ \d+\]")  # Python and C++ logs


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
    """`digits score` from this checkout in a subprocess: seconds, images/s, peak summed PSS,
    and the lines of its output that say ERROR or WARNING."""
    command = [sys.executable, "-c", "from digits.cli import main; main()", "score", *args]
    started, peak = time.perf_counter(), 0.0
    proc = subprocess.Popen(
        [*command, "-o", str(output), "-q", "--provider", "cpu"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    with ThreadPoolExecutor(1) as pool:
        said = pool.submit(proc.stdout.read)  # a full pipe would stall the command
        while proc.poll() is None:
            peak = max(peak, tree_pss_mib([proc.pid, *extra]))
            time.sleep(0.25)  # reading PSS walks every mapping: keep the sampling cheap
        seconds = time.perf_counter() - started
        text = said.result()
    if proc.returncode:
        raise click.ClickException(f"digits score {' '.join(args)} failed:\n{text[-2000:]}")
    rows = pq.read_metadata(output).num_rows if output.is_file() else pq.read_table(output).num_rows
    noisy = [line for line in text.splitlines() if NOISE.search(line)]
    return {
        "images": rows,
        "seconds": round(seconds, 2),
        "images_per_s": round(rows / seconds),
        "peak_pss_mib": round(peak),
        "error_or_warning_lines": noisy,
    }


def slope(small: dict, large: dict) -> float:
    """Images per second past the fixed cost: the slope between two input sizes."""
    return (large["images"] - small["images"]) / (large["seconds"] - small["seconds"])


def median(values: list[float]) -> float:
    """The middle value (the mean of the two middle ones for an even count)."""
    return float(np.median(values))


def summarize(rounds: list[dict[str, dict]], kinds: list[str], cpus: int) -> dict:
    """Per input kind: medians over rounds of each engine's slope, fixed cost and peak."""
    table = {}
    for kind in kinds:
        row: dict[str, object] = {}
        for engine in ("local", "ray"):
            pairs = [(r[f"{engine}_{kind}_small"], r[f"{engine}_{kind}_large"]) for r in rounds]
            slopes = [slope(a, b) for a, b in pairs]
            fixed = [
                a["seconds"] - a["images"] / s for (a, _), s in zip(pairs, slopes, strict=True)
            ]
            row[engine] = {
                "steady_images_per_s": round(median(slopes)),
                "steady_per_core": round(median(slopes) / cpus),
                "rounds_steady_images_per_s": [round(s) for s in slopes],
                "fixed_s_from_slope": round(median(fixed), 2),
                "small_images_per_s": round(median([a["images_per_s"] for a, _ in pairs])),
                "small_seconds": [a["seconds"] for a, _ in pairs],
                "large_seconds": [b["seconds"] for _, b in pairs],
                "peak_pss_mib_small": max(a["peak_pss_mib"] for a, _ in pairs),
                "peak_pss_mib_large": max(b["peak_pss_mib"] for _, b in pairs),
            }
            if engine == "ray":  # what the job adds to a cluster at rest (Ray Data's system
                # actors start with the first job and stay: the median leaves that one out)
                added = [a["peak_pss_mib"] - a["cluster_idle_pss_mib"] for a, _ in pairs]
                row[engine]["job_pss_mib_small"] = round(median(added))
                row[engine]["rounds_job_pss_mib_small"] = added
        ratios = [
            slope(r[f"ray_{kind}_small"], r[f"ray_{kind}_large"])
            / slope(r[f"local_{kind}_small"], r[f"local_{kind}_large"])
            for r in rounds
        ]
        row["ray_to_local_steady"] = round(median(ratios), 3)
        row["rounds_ray_to_local_steady"] = [round(x, 3) for x in ratios]
        table[kind] = row
    return table


def cpu_name() -> str:
    """The CPU model as /proc/cpuinfo names it."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return "unknown"


@click.command()
@click.option("--model", type=click.Path(path_type=Path), default=ROOT / "models/digits.onnx")
@click.option("--images", default=1_000_000, show_default=True, help="Images, small input.")
@click.option("--large", default=3_000_000, show_default=True, help="Images, large input.")
@click.option("--rounds", default=3, show_default=True, help="Alternating rounds; medians count.")
@click.option("--kinds", default="idx,parquet", show_default=True, help="Input kinds to time.")
def main(model: Path, images: int, large: int, rounds: int, kinds: str) -> None:
    """Score the same images with the local scorer and with Ray; write the JSON result."""
    cpus = len(os.sched_getaffinity(0))
    test, source = test_images()
    wanted = kinds.split(",")
    raw: list[dict[str, dict]] = []
    load_before = round(os.getloadavg()[0], 2)
    with tempfile.TemporaryDirectory(prefix="raybench", dir="/tmp") as tmp_name:
        tmp = Path(tmp_name)
        used = model if model.is_file() else write_mlp_onnx(tmp / "mlp.onnx")
        writers = {
            "idx": lambda p, n: write_tiled_idx(
                p.with_name(p.name + "-images-idx3-ubyte"), test, n
            ),
            "parquet": lambda p, n: write_tiled_parquet(p.with_suffix(".parquet"), test, n),
        }
        inputs = {
            f"{kind}_{size}": writers[kind](tmp / f"{size}", n)
            for kind in wanted
            for size, n in (("small", images), ("large", large))
        }
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        # The machine may be shared: alternate the engines run by run and keep the medians.
        with ray_cluster(cpus, tmp / "ray") as (address, ray_env, token):
            cluster = [p.pid for p in marked(token)]
            idle = tree_pss_mib(cluster)
            tiny = tmp / "small.npy"
            np.save(tiny, test[:1000])
            fixed: list[dict] = []
            for _ in range(rounds):
                runs: dict[str, dict] = {}
                for name, path in inputs.items():
                    out = tmp / f"local-{name}.parquet"
                    runs[f"local_{name}"] = run_score([str(used), str(path)], env, out, [])
                    args = [str(used), str(path), "--engine", "ray", "--ray-address", address]
                    args += ["--actors", str(cpus), "--batch-size", "4096"]
                    out = tmp / f"ray-{name}.parquet"
                    idle = tree_pss_mib(cluster)  # Ray's own, Ray Data's system actors included
                    runs[f"ray_{name}"] = run_score(args, ray_env, out, cluster)
                    runs[f"ray_{name}"]["cluster_idle_pss_mib"] = round(idle)
                    shutil.rmtree(out)
                raw.append(runs)
                # Ray's fixed cost per job (connect, start the actors, load the model, commit):
                # scoring 1,000 images is nearly all of it.
                args = [str(used), str(tiny), "--engine", "ray", "--ray-address", address]
                args += ["--actors", str(cpus)]
                fixed.append(run_score(args, ray_env, tmp / "s.parquet", cluster))
                shutil.rmtree(tmp / "s.parquet")
    table = summarize(raw, wanted, cpus)
    every = [run for r in raw for run in r.values()] + fixed
    noisy = sorted({line for run in every for line in run["error_or_warning_lines"]})
    result = {
        "model": str(model) if model.is_file() else "784-512-256-10 ReLU MLP (random weights)",
        "images_source": source,
        "cpu": cpu_name(),
        "cpus": cpus,
        "actors": cpus,
        "images": [images, large],
        "rounds": rounds,
        "table": table,
        "ray_fixed_seconds_per_job_1000_images": {
            "median": median([r["seconds"] for r in fixed]),
            "rounds": [r["seconds"] for r in fixed],
        },
        "cluster_idle_pss_mib": round(idle),
        "error_or_warning_lines": noisy,
        "load_average_1m": [load_before, round(os.getloadavg()[0], 2)],
        "raw": raw,
    }
    steady = max(table[k]["ray"]["steady_per_core"] for k in wanted)
    result["projected_images_per_s_per_added_node"] = {
        f"{c}_cpus": round(steady * c) for c in (2, 8, 32)
    }
    out = ROOT / "bench/results/ray_throughput.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    for kind in wanted:
        row = table[kind]
        click.echo(
            f"{kind}: steady local {row['local']['steady_per_core']:,}/s per core, ray "
            f"{row['ray']['steady_per_core']:,}/s per actor = {row['ray_to_local_steady']:.2f}x "
            f"(rounds {row['rounds_ray_to_local_steady']}); peak {images:,}: local "
            f"{row['local']['peak_pss_mib_small']} MiB, ray {row['ray']['peak_pss_mib_small']} MiB"
        )
    click.echo(
        f"ray fixed cost per job: {result['ray_fixed_seconds_per_job_1000_images']}; "
        f"ERROR/WARNING lines: {len(noisy)}; load {result['load_average_1m']}"
    )


if __name__ == "__main__":
    main()
