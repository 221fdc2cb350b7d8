"""ONNX Runtime latency and throughput of the dense, compressed and int8 models, same run.

Reads models/mlp.pt and models/mlp-compressed.pt (when missing: a 784-512-256-10 BN network and
a copy with half its units removed and 90 % of its weights pruned, as `compress` does) and
data/prepared/test.npz (else random pixels). Exports each with
pipeline.onnx_export.graph.to_onnx into a temp dir, quantizes the compressed one to int8, and
saves an offline-optimized copy of it (ORT graph optimizations, ORT_ENABLE_EXTENDED) to see
whether saving them helps. Each model runs on one CPU session at batch 1, 64 and 1024,
interleaved round by round; the dense fp32 model is the reference for the ratios. Writes
bench/results/onnx_latency.json, prints one summary line.
Run: `python bench/onnx_latency.py [--rounds 5]`.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import click
import numpy as np
import onnx
import onnxruntime as ort

from pipeline.compression.pruning import plain_copy, prune_magnitude
from pipeline.compression.shrink import shrink_hidden
from pipeline.model.network import MLP, ModelParams, build_mlp, load_checkpoint
from pipeline.model.transform import AffineTransform
from pipeline.onnx_export.graph import quantize_int8, to_onnx

ROOT = Path(__file__).resolve().parent.parent
RESULT = ROOT / "bench/results/onnx_latency.json"
BATCHES = (1, 64, 1024)
RUNS = {1: 200, 64: 50, 1024: 5}  # runs per round, so each round takes a similar time


def load_models(dense: Path, compressed: Path) -> tuple[MLP, MLP, str]:
    """The two checkpoints, or stand-ins of the default shape when they do not exist yet."""
    if dense.is_file() and compressed.is_file():
        return load_checkpoint(dense)[0], load_checkpoint(compressed)[0], "checkpoints"
    identity = AffineTransform(np.zeros(784, np.float32), np.eye(784, dtype=np.float32) / 255)
    model = build_mlp(ModelParams(), identity).eval()
    small = plain_copy(shrink_hidden(model, 0.5))
    prune_magnitude(small, 0.9)
    return model, plain_copy(small).eval(), "stand-ins (no checkpoints)"


def session(path: Path, optimized_to: Path | None = None) -> ort.InferenceSession:
    """A CPU session; with `optimized_to`, also save the graph ORT optimized at load."""
    options = ort.SessionOptions()
    if optimized_to is not None:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        options.optimized_model_filepath = str(optimized_to)
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def load_ms(path: Path, repeats: int = 5) -> float:
    """Median milliseconds to create a session for the file."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        session(path)
        times.append(time.perf_counter() - start)
    return round(float(np.median(times)) * 1e3, 2)


def time_round(sess: ort.InferenceSession, x: np.ndarray, runs: int) -> list[float]:
    """Seconds of each of `runs` calls on batch x."""
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        sess.run(["probabilities"], {"pixels": x})
        times.append(time.perf_counter() - start)
    return times


def measure(files: dict[str, Path], x: np.ndarray, rounds: int) -> dict:
    """Median latency (ms) and throughput (images/s) per model and batch, rounds interleaved."""
    sessions = {name: session(path) for name, path in files.items()}
    results = {}
    for batch in BATCHES:
        xb = np.ascontiguousarray(x[:batch], dtype=np.float32)
        samples = {name: [] for name in files}
        for sess in sessions.values():
            time_round(sess, xb, 3)  # warm up
        for _ in range(rounds):
            for name, sess in sessions.items():
                samples[name] += time_round(sess, xb, RUNS[batch])
        for name, times in samples.items():
            seconds = float(np.median(times))
            results.setdefault(name, {})[f"batch{batch}"] = {
                "latency_ms": round(seconds * 1e3, 4),
                "images_per_s": round(batch / seconds),
            }
    return results


def add_ratios(results: dict, reference: str) -> None:
    """Speed-up of each model over the reference at each batch size (reference time / time)."""
    for per_batch in results.values():
        for key, figures in per_batch.items():
            figures["speedup_vs_" + reference] = round(
                results[reference][key]["latency_ms"] / figures["latency_ms"], 3
            )


@click.command()
@click.option(
    "--dense",
    type=click.Path(path_type=Path),
    default=ROOT / "models/mlp.pt",
    help="Dense checkpoint (the reference).",
)
@click.option(
    "--compressed",
    type=click.Path(path_type=Path),
    default=ROOT / "models/mlp-compressed.pt",
    help="Compressed checkpoint; also quantized to int8.",
)
@click.option(
    "--test",
    type=click.Path(path_type=Path),
    default=ROOT / "data/prepared/test.npz",
    help="Images to feed (first 1024 used).",
)
@click.option("--rounds", default=5, show_default=True, help="Interleaved rounds per batch size.")
def main(dense: Path, compressed: Path, test: Path, rounds: int) -> None:
    """Time dense, compressed, compressed+saved-optimizations and int8 ONNX models on CPU."""
    dense_model, small_model, source = load_models(dense, compressed)
    x = (
        np.load(test)["x"]
        if test.is_file()
        else np.random.default_rng(0).integers(0, 256, (1024, 784))
    )
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        files = {"dense": tmp / "dense.onnx", "compressed": tmp / "compressed.onnx"}
        to_onnx(dense_model, files["dense"], opset=18)
        to_onnx(small_model, files["compressed"], opset=18)
        files["int8"] = tmp / "int8.onnx"
        quantize_int8(onnx.load(files["compressed"]), files["int8"], per_channel=True)
        files["optimized"] = tmp / "optimized.onnx"
        session(files["compressed"], optimized_to=files["optimized"])
        sizes = {name: path.stat().st_size for name, path in files.items()}
        loads = {name: load_ms(path) for name, path in files.items()}
        results = measure(files, x, rounds)
    add_ratios(results, "dense")
    result = {
        "models": source,
        "threads": ort.SessionOptions().intra_op_num_threads or "default (all cores)",
        "rounds": rounds,
        "file_bytes": sizes,
        "session_load_ms": loads,
        "results": results,
    }
    RESULT.parent.mkdir(parents=True, exist_ok=True)
    RESULT.write_text(json.dumps(result, indent=2) + "\n")
    summary = ", ".join(
        f"{name} b1 {r['batch1']['latency_ms']:.3f} ms / b1024 {r['batch1024']['images_per_s']}/s "
        f"(×{r['batch1024']['speedup_vs_dense']:.2f})"
        for name, r in results.items()
    )
    click.echo(f"onnx_latency [{source}]: {summary} -> {RESULT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
