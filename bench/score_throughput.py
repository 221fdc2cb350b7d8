"""Throughput of `digits score` end to end vs the in-process ONNX Runtime floor, same run.

Reads the ONNX model (default models/digits.onnx; when missing, a 784-512-256-10 ReLU MLP with
the same contract is built in a temp dir) and data/raw/t10k-images-idx3-ubyte. Writes
bench/results/score_throughput.json and prints one summary line. The test set is tiled into a
1,000,000-image and a 70,000-image IDX file in a temp dir; each is scored by a `digits score`
subprocess (process start included; peak RSS sampled from /proc), to CSV and JSONL, and a
directory of PNGs too. The floor is inference alone on the same float32 arrays, batch 1024,
in this process, taken before and after the runs (the faster counts: the machine is shared).
Run: `python bench/score_throughput.py [--model PATH] [--images 1000000]`.
"""

from __future__ import annotations

import contextlib
import json
import os
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import click
import numpy as np
from PIL import Image

from serving.answers import answer_rows, no_digit_reasons
from serving.scoring.inputs import read_file
from serving.scoring.rows import format_rows
from serving.session import load_model

ROOT = Path(__file__).resolve().parent.parent
TEST_IMAGES = ROOT / "data/raw/t10k-images-idx3-ubyte"
BATCH = 1024
FLOOR_IMAGES = 300_000  # enough batches for a stable rate
DIGITS = Path(sys.executable).parent / "digits"  # the console script of this environment


def write_mlp_onnx(path: Path, widths: tuple[int, ...] = (784, 512, 256, 10)) -> Path:
    """A random ReLU MLP with the digits.onnx contract, the shape `model.hidden` gives."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    nodes, inits, x = [], [], "pixels"
    for i, (n_in, n_out) in enumerate(zip(widths, widths[1:], strict=False)):
        W = rng.normal(0, (2 / n_in) ** 0.5 / (255 if i == 0 else 1), (n_in, n_out))
        inits += [numpy_helper.from_array(W.astype(np.float32), f"W{i}")]
        inits += [numpy_helper.from_array(np.zeros(n_out, np.float32), f"b{i}")]
        last = i == len(widths) - 2
        nodes.append(
            helper.make_node("Gemm", [x, f"W{i}", f"b{i}"], ["logits" if last else f"z{i}"])
        )
        if not last:
            nodes.append(helper.make_node("Relu", [f"z{i}"], [f"h{i}"]))
        x = f"h{i}"
    nodes.append(helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1))
    io = [("pixels", 784), ("logits", 10), ("probabilities", 10)]
    vi = [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["N", k]) for n, k in io]
    graph = helper.make_graph(nodes, "bench-mlp", vi[:1], vi[1:], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # what every onnxruntime since 1.10 loads
    helper.set_model_props(model, {"model_name": "digits", "model_version": "bench-mlp"})
    onnx.save(model, path)
    return path


def write_tiled_idx(path: Path, images: np.ndarray, n: int) -> Path:
    """An IDX file of n images: `images` (M, 784) repeated, written block by block."""
    with path.open("wb") as f:
        f.write(struct.pack(">HBB3I", 0, 0x08, 3, n, 28, 28))
        for start in range(0, n, len(images)):
            f.write(images[: min(len(images), n - start)].tobytes())
    return path


def write_pngs(directory: Path, images: np.ndarray) -> Path:
    """One PNG per image (white digit on black, as MNIST)."""
    directory.mkdir()
    for i, image in enumerate(images):
        Image.fromarray(image.reshape(28, 28)).save(directory / f"{i:05d}.png")
    return directory


def peak_rss_mib(pid: int) -> float:
    """The process's peak RSS so far (VmHWM: of its own address space, from exec on)."""
    with contextlib.suppress(OSError), open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


def run_score(model: Path, inputs: Path, output: Path) -> dict:
    """Run `digits score` as a subprocess: wall seconds, peak RSS (MiB), images/s."""
    cmd = [str(DIGITS), "score", str(model), str(inputs), "-o", str(output), "-q"]
    started, peak = time.perf_counter(), 0.0
    # wait4's ru_maxrss would count this process's memory too (a child starts from its parent's
    # RSS), so sample VmHWM, which is monotonic, until the child exits.
    proc = subprocess.Popen([*cmd, "--provider", "cpu"], cwd=ROOT)
    while proc.poll() is None:
        peak = max(peak, peak_rss_mib(proc.pid))
        time.sleep(0.02)
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        raise click.ClickException(f"digits score failed on {inputs}")
    rows = sum(1 for _ in output.open("rb")) - (output.suffix == ".csv")
    return {
        "images": rows,
        "seconds": round(seconds, 3),
        "images_per_s": round(rows / seconds),
        "peak_rss_mib": round(peak, 1),
        "bytes": output.stat().st_size,
    }


def floor_rate(model: Path, images: np.ndarray, n: int) -> float:
    """Images/s of inference alone: float32 batches of 1024 of `images`, cycled to n images."""
    session = load_model(model, provider="cpu")
    X = images.astype(np.float32)
    batches = [X[i : i + BATCH] for i in range(0, len(X), BATCH)]
    session.predict(batches[0])  # warm up
    done, started = 0, time.perf_counter()
    while done < n:
        batch = batches[(done // BATCH) % len(batches)]
        session.predict(batch)
        done += len(batch)
    return done / (time.perf_counter() - started)


def breakdown(model: Path, idx: Path) -> dict:
    """Seconds per stage for one in-process pass over an IDX file: read, infer, answer+format."""
    session, spent = (
        load_model(model, provider="cpu"),
        dict.fromkeys(["read", "infer", "format"], 0.0),
    )
    clock = time.perf_counter()
    for chunk in read_file(idx, BATCH):
        X = chunk.pixels.astype(np.float32)
        spent["read"] += -clock + (clock := time.perf_counter())
        _, P = session.predict(X)
        spent["infer"] += -clock + (clock := time.perf_counter())
        answers = answer_rows(P, no_digit_reasons(chunk.pixels, chunk.reasons), session.threshold)
        format_rows(chunk.ids, P, answers, "csv", False)
        spent["format"] += -clock + (clock := time.perf_counter())
    return {k: round(v, 3) for k, v in spent.items()}


def startup_seconds() -> float:
    """Wall seconds of `digits score --help`: interpreter, click and the imports."""
    started = time.perf_counter()
    cmd = [str(DIGITS), "score", "--help"]
    subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True)
    return round(time.perf_counter() - started, 3)


@click.command()
@click.option("--model", type=click.Path(path_type=Path), default=ROOT / "models/digits.onnx")
@click.option("--images", default=1_000_000, show_default=True, help="Size of the big IDX file.")
@click.option("--pngs", default=2000, show_default=True, help="PNG files in the directory run.")
def main(model: Path, images: int, pngs: int) -> None:
    """Measure `digits score` throughput against the ONNX Runtime floor; write the JSON result."""
    test = np.frombuffer(TEST_IMAGES.read_bytes(), np.uint8, offset=16).reshape(-1, 784)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        used = model if model.is_file() else write_mlp_onnx(tmp / "mlp.onnx")
        big = write_tiled_idx(tmp / "big-images-idx3-ubyte", test, images)
        small = write_tiled_idx(tmp / "small-images-idx3-ubyte", test, 70_000)
        floors = [floor_rate(used, test, FLOOR_IMAGES)]
        runs = {
            "idx_big_csv": run_score(used, big, tmp / "big.csv"),
            "idx_big_jsonl": run_score(used, big, tmp / "big.jsonl"),
            "idx_70k_csv": run_score(used, small, tmp / "small.csv"),
            "png_dir_csv": run_score(used, write_pngs(tmp / "pngs", test[:pngs]), tmp / "png.csv"),
        }
        # The machine is shared: take the floor before and after the runs and keep the faster.
        floors.append(floor_rate(used, test, FLOOR_IMAGES))
        floor = max(floors)
        result = {
            "model": str(model) if model.is_file() else "784-512-256-10 ReLU MLP (random weights)",
            "floor_images_per_s": round(floor),
            "floor_runs_images_per_s": [round(f) for f in floors],
            "runs": runs,
            "ratio_to_floor": {k: round(r["images_per_s"] / floor, 3) for k, r in runs.items()},
            "startup_seconds": startup_seconds(),
            "breakdown_70k_seconds": breakdown(used, small),
            "cpu_count": os.cpu_count(),
        }
    out = ROOT / "bench/results/score_throughput.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    rate = {k: f"{r['images_per_s']:,}/s" for k, r in runs.items()}
    click.echo(
        f"score {images:,} IDX->CSV: {rate['idx_big_csv']} = "
        f"{result['ratio_to_floor']['idx_big_csv']:.2f}x floor ({round(floor):,}/s), "
        f"peak RSS {runs['idx_big_csv']['peak_rss_mib']} MiB; JSONL {rate['idx_big_jsonl']}, "
        f"70k {rate['idx_70k_csv']}, PNG dir {rate['png_dir_csv']}"
    )


if __name__ == "__main__":
    main()
