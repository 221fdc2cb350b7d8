"""Stage `export`: the compressed network as one verified ONNX file that takes raw pixels.

Reads: models/mlp-compressed.pt (or models/mlp.pt), data/prepared/test.npz, reports/evaluate.json,
reports/compress.json, params.yaml `base`, `export`.
Writes: models/digits.onnx, models/digits-int8.onnx, models/MODEL_CARD.md, reports/export.json.
Run: `digits export`
"""

from __future__ import annotations

import copy
import warnings
from pathlib import Path

import onnx
import torch
from torch import nn

from pipeline.atomic import atomic_path
from pipeline.network import MLP, PIXELS, Preprocess

INPUT = "pixels"
OUTPUTS = ("logits", "probabilities")
# Ops that only make sense while training; an inference graph must not carry them.
TRAINING_OPS = {"BatchNormalization", "Dropout"}
TRAINING_DOMAIN = "ai.onnx.preview.training"


class Classifier(nn.Module):
    """The network with softmax in the graph: pixels -> (logits, probabilities)."""

    def __init__(self, model: MLP) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.model(pixels)  # (N, 784) -> (N, 10)
        return logits, torch.softmax(logits, dim=1)


def inference_ready(model: MLP) -> MLP:
    """An eval-mode copy with batchnorm and preprocessing folded into the Linear layers."""
    model = copy.deepcopy(model).eval()
    has_bn = any(isinstance(block.norm, nn.BatchNorm1d) for block in model.blocks)
    if has_bn or isinstance(model.preprocess, Preprocess):
        # Imported here so an already folded model exports without the compression code.
        from pipeline.compression import fold_batchnorm, fold_preprocess

        if has_bn:
            model = fold_batchnorm(model)
        if isinstance(model.preprocess, Preprocess):
            model = fold_preprocess(model)
    return model.eval()


def training_nodes(proto: onnx.ModelProto) -> list[str]:
    """Op types in the graph that belong to training only (should be empty)."""
    return [
        node.op_type
        for node in proto.graph.node
        if node.op_type in TRAINING_OPS or node.domain == TRAINING_DOMAIN
    ]


def build_onnx(model: MLP, opset: int = 17) -> onnx.ModelProto:
    """Export the folded network to an ONNX proto with a dynamic batch axis, shapes inferred."""
    folded = inference_ready(model)
    example = torch.rand(2, PIXELS) * 255  # (N, 784) raw pixels
    with warnings.catch_warnings():
        # torch.export's own internals warn about its pytree API; nothing we can change.
        warnings.filterwarnings("ignore", message=".*LeafSpec.*", category=FutureWarning)
        program = torch.onnx.export(
            Classifier(folded).eval(),
            (example,),
            input_names=[INPUT],
            output_names=list(OUTPUTS),
            dynamic_shapes=({0: "N"},),
            opset_version=opset,
            dynamo=True,
            verbose=False,
        )
    proto = program.model_proto
    proto = onnx.shape_inference.infer_shapes(proto, check_type=True, strict_mode=True)
    found = training_nodes(proto)
    if found:
        raise ValueError(f"exported graph still has training-only nodes: {sorted(set(found))}")
    return proto


def save_onnx(proto: onnx.ModelProto, path: Path) -> None:
    """Run the full ONNX checker, then write the file atomically."""
    onnx.checker.check_model(proto, full_check=True)
    with atomic_path(path, suffix=".onnx") as tmp:
        onnx.save(proto, tmp)


def to_onnx(model: MLP, path: Path, opset: int = 17) -> None:
    """Write `model` as a checked ONNX file: pixels (N, 784) 0–255 -> logits, probabilities."""
    save_onnx(build_onnx(model, opset), Path(path))
