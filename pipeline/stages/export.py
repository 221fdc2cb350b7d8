"""Stage `export`: the compressed network as one verified ONNX file that takes raw pixels.

Reads: models/mlp-compressed.pt (or models/mlp.pt), data/prepared/test.npz, reports/evaluate.json,
reports/compress.json, params.yaml `base`, `export`.
Writes: models/digits.onnx, models/digits-int8.onnx, their golden vectors beside them
(digits.golden.npz, digits-int8.golden.npz), models/MODEL_CARD.md, reports/export.json,
logs/export.json (int8 timings).
Run: `digits export`
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import click
import numpy as np
import onnx
import onnxruntime as ort
import torch

from digits import __version__
from digits.atomic import atomic_path, write_json
from digits.contract import INPUT, PROBABILITIES, THRESHOLD_KEY, VERSION_KEY
from digits.golden import golden_path, write_golden
from digits.npz import read_split
from pipeline.analysis.classification import accuracy
from pipeline.compression.size import deployed_size
from pipeline.config import BaseParams, begin_stage, load_group, read_params, require
from pipeline.model.network import MLP, load_checkpoint, predict_logits
from pipeline.onnx_export.graph import (
    build_onnx,
    compare,
    golden_vectors,
    graph_weights_nonzero,
    inference_ready,
    model_metadata,
    quantize_int8,
    save_onnx,
)
from pipeline.onnx_export.model_card import render_card
from pipeline.onnx_export.plain_session import cpu_session, onnx_probabilities
from pipeline.options import params_option, path_option
from pipeline.run_log import write_run_log

CHECKPOINTS = {"compressed": "mlp-compressed.pt", "dense": "mlp.pt"}
# The groups whose values shape the exported network; their digest goes into the metadata.
PARAM_GROUPS = ("base", "data", "model", "train", "compress", "export")


@dataclass(frozen=True)
class ExportParams:
    """params.yaml `export:` group."""

    model: Literal["compressed", "dense"] = "compressed"
    opset: int = 18  # the dynamo exporter's native opset: no version conversion step
    # int8 weights: one scale per output channel. Per tensor, the few large first-layer weights
    # (rare pixels, standardized) set the scale and the rest round to zero: chance accuracy.
    per_channel: bool = True
    weight_type: Literal["qint8", "quint8"] = "quint8"  # signed or unsigned int8 weights
    max_prob_diff: float = 1e-5  # parity with torch the fp32 file must meet, or nothing is written

    def __post_init__(self) -> None:
        newest = onnx.defs.onnx_opset_version()
        require(17 <= self.opset <= newest, "export.opset", f"must be in 17..{newest}")
        require(self.max_prob_diff > 0, "export.max_prob_diff", "must be > 0")


@dataclass(frozen=True)
class ExportPaths:
    """Where the stage reads the checkpoint and test split and writes its artifacts."""

    checkpoint: Path
    test: Path
    onnx: Path
    int8: Path
    card: Path


def sha256_file(path: Path) -> str:
    """SHA-256 of a file, or "none" when it does not exist (e.g. before the first dvc repro)."""
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else "none"


def params_digest(params_file: Path) -> str:
    """SHA-256 of the params groups the model depends on, in canonical JSON."""
    groups = read_params(params_file)
    relevant = {name: groups[name] for name in PARAM_GROUPS if name in groups}
    return hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()


def read_recorded(
    evaluate_file: Path, compress_file: Path, choice: str
) -> tuple[dict[str, float], dict[str, float]]:
    """What was recorded for the model: dev/test accuracy and the low-confidence threshold
    (evaluate.json) and sparsity (compress.json), for the metadata; and the share and accuracy
    of the test answers that threshold flags, for the card."""
    evaluated = json.loads(evaluate_file.read_text()).get(choice, {})
    # The threshold: chosen on dev by evaluate; serving flags answers below it.
    keys = ("dev_accuracy", "test_accuracy", THRESHOLD_KEY)
    recorded = {key: evaluated.get(key) for key in keys}
    if choice == "compressed":
        recorded["sparsity"] = json.loads(compress_file.read_text()).get("sparsity")
    else:
        recorded["sparsity"] = 0.0  # the dense model is not pruned
    missing = [key for key, value in recorded.items() if not isinstance(value, int | float)]
    if missing:
        raise click.ClickException(f"no {choice} {missing[0]} recorded in {evaluate_file}")
    flags = {key: evaluated.get(f"test_{key}") for key in ("flagged_share", "flagged_accuracy")}
    return recorded, flags


def median_seconds(session: ort.InferenceSession, x: np.ndarray, repeats: int) -> float:
    """Median wall time of one run on batch x."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        session.run([PROBABILITIES], {INPUT: x})
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def compare_speed(fp32: ort.InferenceSession, int8: ort.InferenceSession, x: np.ndarray) -> dict:
    """int8 vs fp32 median latency at batch 1 and 1024, measured side by side."""
    speed = {}
    for batch, repeats in ((1, 200), (1024, 10)):
        xb = np.ascontiguousarray(x[:batch], dtype=np.float32)
        median_seconds(fp32, xb, 3), median_seconds(int8, xb, 3)  # warm up both
        t32, t8 = median_seconds(fp32, xb, repeats), median_seconds(int8, xb, repeats)
        speed[f"batch{batch}"] = {
            "fp32_ms": round(t32 * 1e3, 4),
            "int8_ms": round(t8 * 1e3, 4),
            "int8_speedup": round(t32 / t8, 3),
        }
    return speed


def verify(model: MLP, fp32: Path, int8: Path, x: np.ndarray, y: np.ndarray) -> dict:
    """Parity of the ONNX file with torch, and accuracy and agreement of the int8 file."""
    logits = torch.from_numpy(predict_logits(model, x))
    reference = torch.softmax(logits, dim=1).numpy()  # (N, 10), the torch oracle
    fp32_session, int8_session = cpu_session(fp32), cpu_session(int8)
    probs, probs8 = onnx_probabilities(fp32_session, x), onnx_probabilities(int8_session, x)
    return {
        **compare(reference, probs),
        "test_accuracy": accuracy(probs, y),
        "file_bytes": fp32.stat().st_size,
        "int8": {
            "test_accuracy": accuracy(probs8, y),
            "file_bytes": int8.stat().st_size,
            "vs_fp32": compare(probs, probs8),
        },
    }


def check_parity(report: dict, tolerance: float) -> None:
    """Refuse a file that disagrees with torch (the atomic writes then leave nothing behind)."""
    diff, agreement = report["max_abs_prob_diff"], report["argmax_agreement"]
    if diff > tolerance or agreement < 1:
        raise click.ClickException(
            f"ONNX disagrees with torch: max |Δp| {diff:.2e} (limit {tolerance:.0e}), "
            f"argmax agreement {agreement:.4%}"
        )


def check_size(deployed: dict) -> None:
    """Refuse a graph whose weight matrices hold other nonzero weights than the model counts."""
    graph, counted = deployed["graph_weights_nonzero"], deployed["nonzero_total"]
    if graph != counted:
        raise click.ClickException(
            f"the ONNX graph holds {graph:,} nonzero weights, the model {counted:,}"
        )


def export(
    paths: ExportPaths, params: ExportParams, provenance: dict[str, Any], flags: dict[str, float]
) -> dict:
    """Export, quantize and verify the checkpoint; write both ONNX files and the card together.

    `flags`: what the recorded low-confidence threshold flags on test, for the card.
    """
    model, _ = load_checkpoint(paths.checkpoint)
    x, y = read_split(paths.test)
    proto = build_onnx(model, params.opset)
    props = model_metadata(proto, {**provenance, "opset": params.opset})
    onnx.helper.set_model_props(proto, props)
    with (
        atomic_path(paths.onnx, suffix=".onnx") as fp32,
        atomic_path(paths.int8, suffix=".onnx") as int8,
        atomic_path(golden_path(paths.onnx), suffix=".npz") as fp32_golden,
        atomic_path(golden_path(paths.int8), suffix=".npz") as int8_golden,
        atomic_path(paths.card) as card,
    ):
        save_onnx(proto, fp32)
        quantize_int8(proto, int8, params.per_channel, params.weight_type)
        report = {"model": params.model, "opset": params.opset, **verify(model, fp32, int8, x, y)}
        report["metadata"] = props
        report["low_confidence"] = flags
        report["deployed"] = deployed_size(inference_ready(model))  # what the graph computes
        report["deployed"]["graph_weights_nonzero"] = graph_weights_nonzero(proto)
        check_parity(report, params.max_prob_diff)
        check_size(report["deployed"])
        version = props[VERSION_KEY]
        write_golden(fp32_golden, golden_vectors(fp32, x, version))
        write_golden(int8_golden, golden_vectors(int8, x, version + "-int8"))
        card.write_text(render_card(report, paths.onnx, paths.int8))
    return report


@click.command("export")
@params_option
@path_option(
    "--models", default="models", help="Directory of checkpoints; the ONNX files and card go here."
)
@path_option("--test", default="data/prepared/test.npz", help="Test split for parity and accuracy.")
@path_option(
    "--evaluate", default="reports/evaluate.json", help="Recorded accuracies (evaluate stage)."
)
@path_option(
    "--compress", default="reports/compress.json", help="Recorded sparsity (compress stage)."
)
@path_option(
    "--report", default="reports/export.json", help="Metrics JSON to write.", dir_okay=False
)
def export_command(
    params_file: Path, models: Path, test: Path, evaluate: Path, compress: Path, report: Path
) -> None:
    """Export the chosen model to a verified ONNX file (+ int8 variant and model card)."""
    begin_stage(load_group(BaseParams, "base", params_file))
    config = load_group(ExportParams, "export", params_file)
    paths = ExportPaths(
        checkpoint=models / CHECKPOINTS[config.model],
        test=test,
        onnx=models / "digits.onnx",
        int8=models / "digits-int8.onnx",
        card=models / "MODEL_CARD.md",
    )
    recorded, flags = read_recorded(evaluate, compress, config.model)
    provenance = {
        **recorded,
        "params_digest": params_digest(params_file),
        "checkpoint_sha256": sha256_file(paths.checkpoint),
        "test_sha256": sha256_file(paths.test),
        "package_version": __version__,
    }
    result = export(paths, config, provenance, flags)
    write_json(report, result)
    # Timings differ between runs of the same inputs: a run log, not part of the metrics.
    x, _ = read_split(paths.test)
    write_run_log(
        "export", {"int8_speed": compare_speed(cpu_session(paths.onnx), cpu_session(paths.int8), x)}
    )
    click.echo(
        f"exported {config.model} -> {paths.onnx}: max |Δp| {result['max_abs_prob_diff']:.2e}, "
        f"agreement {result['argmax_agreement']:.4f}, test accuracy {result['test_accuracy']:.4f}"
    )
