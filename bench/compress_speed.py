"""ONNX Runtime latency of the compressed model against the dense one, measured in the same run.

Reads models/mlp.pt and models/mlp-compressed.pt (run `digits compress` first) and
data/prepared/test.npz. Exports three models with pipeline.onnx_export.graph.to_onnx into a temp
dir: `dense` (the reference), `dense_sparse` (the dense network magnitude-pruned to the
compressed model's sparsity but not shrunk: unstructured zeros alone buy no speed on dense
kernels) and `compressed`. Times one single-threaded CPU session each at batch 1 and 256, rounds
interleaved so machine noise hits all models alike; reports median ms and the ratio to dense.
Writes bench/results/compress_speed.json and prints one summary line.
Run: `python bench/compress_speed.py [--rounds 7]`
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import click
import numpy as np
import onnxruntime as ort

from pipeline.compression.pruning import plain_copy, prune_magnitude
from pipeline.compression.size import model_summary
from pipeline.model.network import load_checkpoint
from pipeline.onnx_export.graph import to_onnx

ROOT = Path(__file__).resolve().parent.parent
RESULT = ROOT / "bench/results/compress_speed.json"
RUNS = {1: 300, 256: 20}  # calls per round and batch size: each round takes a similar time


def cpu_session(path: Path) -> ort.InferenceSession:
    """A one-thread CPU session: the figures then compare work, not core scheduling."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def time_calls(session: ort.InferenceSession, x: np.ndarray, calls: int) -> list[float]:
    """Seconds of each of `calls` runs on batch x."""
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        session.run(["logits"], {"pixels": x})
        times.append(time.perf_counter() - start)
    return times


def measure(files: dict[str, Path], x: np.ndarray, rounds: int) -> dict[str, dict]:
    """Median ms per model and batch size, rounds interleaved across the models."""
    sessions = {name: cpu_session(path) for name, path in files.items()}
    results: dict[str, dict] = {name: {} for name in files}
    for batch, calls in RUNS.items():
        xb = np.ascontiguousarray(x[:batch], dtype=np.float32)  # (batch, 784)
        samples: dict[str, list[float]] = {name: [] for name in files}
        for session in sessions.values():
            time_calls(session, xb, 5)  # warm up
        for _ in range(rounds):
            for name, session in sessions.items():
                samples[name] += time_calls(session, xb, calls)
        for name, times in samples.items():
            results[name][f"batch{batch}_ms"] = round(float(np.median(times)) * 1e3, 4)
    for figures in results.values():
        for batch in RUNS:
            reference = results["dense"][f"batch{batch}_ms"]
            figures[f"batch{batch}_vs_dense"] = round(figures[f"batch{batch}_ms"] / reference, 3)
    return results


@click.command()
@click.option(
    "--dense",
    type=click.Path(path_type=Path, exists=True, dir_okay=False),
    default=ROOT / "models/mlp.pt",
    help="Dense checkpoint (the reference).",
)
@click.option(
    "--compressed",
    type=click.Path(path_type=Path, exists=True, dir_okay=False),
    default=ROOT / "models/mlp-compressed.pt",
    help="Compressed checkpoint.",
)
@click.option(
    "--test",
    type=click.Path(path_type=Path, exists=True, dir_okay=False),
    default=ROOT / "data/prepared/test.npz",
    help="Images to feed (first 256).",
)
@click.option("--rounds", default=7, show_default=True, help="Interleaved rounds per batch size.")
def main(dense: Path, compressed: Path, test: Path, rounds: int) -> None:
    """Time dense, dense-but-sparse and compressed ONNX models at batch 1 and 256."""
    dense_model, _ = load_checkpoint(dense)
    small_model, _ = load_checkpoint(compressed)
    sparsity = model_summary(small_model)["sparsity"]
    sparse_model = plain_copy(dense_model).eval()
    prune_magnitude(sparse_model, sparsity)
    models = {"dense": dense_model, "dense_sparse": sparse_model, "compressed": small_model}
    with np.load(test) as data:
        x = data["x"][: max(RUNS)]
    with tempfile.TemporaryDirectory() as tmp:
        files = {name: Path(tmp) / f"{name}.onnx" for name in models}
        for name, model in models.items():
            to_onnx(model, files[name])
        sizes = {name: path.stat().st_size for name, path in files.items()}
        results = measure(files, x, rounds)
    shapes = {name: list(model.spec.hidden) for name, model in models.items()}
    result = {"rounds": rounds, "threads": 1, "sparsity": sparsity, "hidden": shapes}
    result.update(file_bytes=sizes, results=results)
    RESULT.parent.mkdir(parents=True, exist_ok=True)
    RESULT.write_text(json.dumps(result, indent=2) + "\n")
    summary = ", ".join(
        f"{name} b1 {r['batch1_ms']:.4f} ms (x{r['batch1_vs_dense']:.2f}) "
        f"b256 {r['batch256_ms']:.3f} ms (x{r['batch256_vs_dense']:.2f})"
        for name, r in results.items()
    )
    click.echo(f"compress_speed: {summary} -> {RESULT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
