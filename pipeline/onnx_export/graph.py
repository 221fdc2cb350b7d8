"""The folded network as an ONNX graph: pixels (N, 784) 0–255 -> logits, probabilities.

The export stage, the ensemble command and the benchmarks build ONNX files through these
functions; every file is checked by the full ONNX checker before it is written, carries the
metadata serving reads, and is checked against torch and given golden vectors the same way.
Int8 variants come from ONNX Runtime's dynamic quantization.
"""

from __future__ import annotations

import hashlib
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnx.numpy_helper
import torch
from onnxruntime.quantization import QuantType, quant_pre_process, quantize_dynamic
from torch import nn

from digits import __version__
from digits.atomic import atomic_path
from digits.contract import (
    INPUT,
    OUTPUTS,
    PIXELS,
    UNKNOWN_VERSION,
    VERSION_KEY,
    contract_metadata,
)
from digits.golden import Golden
from pipeline.compression.folding import fold_batchnorm, fold_preprocess_if_smaller, has_batchnorm
from pipeline.compression.pruning import plain_copy
from pipeline.model.network import MLP
from pipeline.onnx_export.plain_session import cpu_session

# Ops that only make sense while training; an inference graph must not carry them.
TRAINING_OPS = {"BatchNormalization", "Dropout"}
TRAINING_DOMAIN = "ai.onnx.preview.training"
GOLDEN_IMAGES = 16  # test images in the golden vectors, besides an all-0 and an all-255 image


class Classifier(nn.Module):
    """The network with softmax in the graph: pixels -> (logits, probabilities)."""

    def __init__(self, model: MLP) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.model(pixels)  # (N, 784) -> (N, 10)
        return logits, torch.softmax(logits, dim=1)


def inference_ready(model: MLP) -> MLP:
    """An eval-mode copy with masks and batchnorm folded, and the fixed map too if that is smaller.

    A map that mixes pixels (PCA, ZCA) would make a sparse first layer dense; when keeping it as
    its own MatMul costs less, the graph computes (pixels - mean) @ matrix first.
    """
    model = plain_copy(model)
    if has_batchnorm(model):
        model = fold_batchnorm(model)
    if model.spec.preprocess:
        model, _ = fold_preprocess_if_smaller(model)
    return model.eval()


def training_nodes(proto: onnx.ModelProto) -> list[str]:
    """Op types in the graph that belong to training only (should be empty)."""
    return [
        node.op_type
        for node in proto.graph.node
        if node.op_type in TRAINING_OPS or node.domain == TRAINING_DOMAIN
    ]


def strip_trace_metadata(proto: onnx.ModelProto) -> None:
    """Drop the exporter's notes (per-node Python stack traces with absolute paths, scopes).

    They make the file a function of where the checkout lives and of our line numbers, so the
    same weights exported from two clones would differ; the graph itself keeps every name.
    """
    for node in proto.graph.node:
        del node.metadata_props[:]
    for entry in (*proto.graph.value_info, *proto.graph.input, *proto.graph.output):
        del entry.metadata_props[:]
    del proto.graph.metadata_props[:]  # torch.export's graph signature: its internals


def build_onnx(model: MLP, opset: int = 17) -> onnx.ModelProto:
    """Export the folded network to an ONNX proto with a dynamic batch axis, shapes inferred."""
    return export_classifier(Classifier(inference_ready(model)), opset)


def export_classifier(classifier: nn.Module, opset: int) -> onnx.ModelProto:
    """Export pixels -> (logits, probabilities) to a checked-shape proto without training ops."""
    example = torch.rand(2, PIXELS) * 255  # (N, 784) raw pixels
    with warnings.catch_warnings():
        # torch.export's own internals warn about its pytree API; nothing we can change.
        warnings.filterwarnings("ignore", message=".*LeafSpec.*", category=FutureWarning)
        program = torch.onnx.export(
            classifier.eval(),
            (example,),
            input_names=[INPUT],
            output_names=list(OUTPUTS),
            dynamic_shapes=({0: "N"},),
            opset_version=opset,
            dynamo=True,
            verbose=False,
        )
    proto = program.model_proto
    strip_trace_metadata(proto)
    proto = onnx.shape_inference.infer_shapes(proto, check_type=True, strict_mode=True)
    found = training_nodes(proto)
    if found:
        raise ValueError(f"exported graph still has training-only nodes: {sorted(set(found))}")
    return proto


def graph_weights_nonzero(proto: onnx.ModelProto) -> int:
    """Nonzero entries of every weight matrix in the graph (rank-2 initializers and constants).

    What a nonzero-weight budget counts, read from the file rather than from the checkpoint.
    """
    tensors = list(proto.graph.initializer)
    for node in proto.graph.node:
        if node.op_type == "Constant":
            tensors += [attr.t for attr in node.attribute if attr.name == "value"]
    arrays = (onnx.numpy_helper.to_array(tensor) for tensor in tensors if len(tensor.dims) == 2)
    return sum(int(np.count_nonzero(array)) for array in arrays)


def save_onnx(proto: onnx.ModelProto, path: Path) -> None:
    """Run the full ONNX checker on `proto`, then write it to `path`."""
    onnx.checker.check_model(proto, full_check=True)
    onnx.save(proto, path)


def to_onnx(model: MLP, path: Path, opset: int = 17) -> None:
    """Write `model` as a checked ONNX file: pixels (N, 784) 0–255 -> logits, probabilities."""
    with atomic_path(path, suffix=".onnx") as tmp:
        save_onnx(build_onnx(model, opset), tmp)


def quantize_int8(
    proto: onnx.ModelProto, path: Path, per_channel: bool, weight_type: str = "quint8"
) -> None:
    """Dynamic int8 weight quantization (onnxruntime.quantization), keeping the metadata."""
    # The recommended pre-pass (shape inference, graph optimization) keeps the int8 graph's
    # shapes consistent, so the full checker accepts it.
    quant_pre_process(proto, path)
    weights = QuantType.QUInt8 if weight_type == "quint8" else QuantType.QInt8
    quantize_dynamic(onnx.load(path), path, per_channel=per_channel, weight_type=weights)
    quantized = onnx.load(path)
    props = {p.key: p.value for p in proto.metadata_props}
    props[VERSION_KEY] = props.get(VERSION_KEY, UNKNOWN_VERSION) + "-int8"  # other weights
    props["quantization"] = f"dynamic {weight_type}" + (" per channel" if per_channel else "")
    onnx.helper.set_model_props(quantized, props)
    save_onnx(quantized, path)


def model_metadata(proto: onnx.ModelProto, provenance: dict[str, Any]) -> dict[str, str]:
    """The metadata_props serving and people read: name, version, classes, input, provenance."""
    digest = hashlib.sha256(proto.SerializeToString()).hexdigest()  # the graph and its weights
    return {
        **contract_metadata(f"{__version__}+{digest[:12]}"),
        **{key: str(value) for key, value in provenance.items()},
    }


def compare(reference: np.ndarray, other: np.ndarray) -> dict[str, float]:
    """Max |Δprobability| and argmax agreement between two (N, 10) probability arrays."""
    return {
        "max_abs_prob_diff": float(np.abs(reference - other).max()),
        "argmax_agreement": float((reference.argmax(1) == other.argmax(1)).mean()),
    }


def golden_vectors(path: Path, x: np.ndarray, version: str) -> Golden:
    """The written file's own outputs on a few test images and the two extreme blank images."""
    blank = np.zeros((1, PIXELS), np.float32)
    pixels = np.concatenate([x[:GOLDEN_IMAGES].astype(np.float32), blank, blank + 255])
    logits, probabilities = cpu_session(path).run(list(OUTPUTS), {INPUT: pixels})
    return Golden(pixels, logits, probabilities, version)
