"""Size accounting of an MLP: nonzero weights, sparsity, FLOPs, and what deployment computes.

Feeds compress.json, export.json and the model card. Reads and writes no files.
"""

from __future__ import annotations

from digits.contract import PIXELS
from pipeline.compression.pruning import effective_weight, plain_copy
from pipeline.model.network import MLP


def deployed_size(model: MLP) -> dict:
    """What inference computes with: nonzero Linear weights, the kept map, MACs per image."""
    weights = sum(int(effective_weight(lin).count_nonzero()) for lin in model.linears())
    matrix = model.preprocess.matrix if model.spec.preprocess else None
    map_entries = matrix.numel() if matrix is not None else 0
    return {
        "weights_nonzero": weights,
        "preprocess_map_entries": map_entries,
        "macs_per_image": weights + map_entries,  # the map is a dense MatMul
        # every weight matrix of the graph, the map's included: what a budget counts
        "nonzero_total": weights + (int(matrix.count_nonzero()) if matrix is not None else 0),
    }


def layer_summary(model: MLP) -> list[dict]:
    """Per Linear layer: shape, weights, non-zero weights, sparsity."""
    rows = []
    names = [f"blocks.{i}.linear" for i in range(len(model.blocks))] + ["head"]
    for name, linear in zip(names, model.linears(), strict=True):
        W = effective_weight(linear)
        nonzero = int(W.count_nonzero())
        rows.append(
            {
                "layer": name,
                "shape": list(W.shape),
                "weights": W.numel(),
                "nonzero": nonzero,
                "sparsity": 1 - nonzero / W.numel(),
            }
        )
    return rows


def model_summary(model: MLP) -> dict:
    """Global sparsity, parameters total / non-zero, FLOPs per sample (dense and non-zero).

    FLOPs count a multiply and an add per weight, plus the preprocessing matmul when it is
    still in front and a multiply-add per BatchNorm unit; activations are not counted.
    """
    plain = plain_copy(model)
    layers = layer_summary(plain)
    weights = sum(row["weights"] for row in layers)
    nonzero = sum(row["nonzero"] for row in layers)
    params = list(plain.parameters())
    extra = 0
    if plain.spec.preprocess:
        extra += 2 * plain.preprocess.matrix.numel() + PIXELS
    extra += sum(2 * b.norm.num_features for b in plain.blocks if hasattr(b.norm, "running_var"))
    return {
        "sparsity": 1 - nonzero / weights,
        "hidden": list(plain.spec.hidden),
        "params_total": sum(p.numel() for p in params),
        "params_nonzero": sum(int(p.count_nonzero()) for p in params),
        "flops_per_sample": 2 * weights + extra,
        "flops_per_sample_nonzero": 2 * nonzero + extra,
        "layers": layers,
    }
