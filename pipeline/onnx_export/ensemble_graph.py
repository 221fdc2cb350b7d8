"""Ensembles: k networks that differ by seed, combined into one classifier and one ONNX graph.

`mean` averages the members' probabilities; `vote` counts each member's argmax as one vote and
breaks ties by the mean probability: probabilities = (votes + mean) / (k + 1), so a class with
more votes always wins. The combined classifier keeps the digits.onnx contract, pixels (N, 784)
0–255 in, `logits` and `probabilities` (N, 10) out, where `logits` is the log of the ensemble's
probabilities (softmax(logits) gives them back). Reads and writes no files.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import onnx
import torch
from torch import nn

from pipeline.config import require
from pipeline.model.network import MLP
from pipeline.onnx_export.graph import export_classifier, inference_ready

Combine = Literal["mean", "vote"]
# The smallest positive float32: log() of a probability that underflowed stays finite.
TINY = torch.finfo(torch.float32).tiny


@dataclass(frozen=True)
class EnsembleParams:
    """params.yaml `ensemble:` group (`digits ensemble`, outside `dvc repro`)."""

    members: int = 5  # networks, trained with base.seed, base.seed + 1, ...
    combine: Combine = "mean"

    def __post_init__(self) -> None:
        require(self.members >= 2, "ensemble.members", "must be >= 2")


class Ensemble(nn.Module):
    """Members' outputs combined: pixels (N, 784) -> (log-probabilities, probabilities)."""

    def __init__(self, members: list[MLP], combine: Combine) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)
        self.combine = combine

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        probs = torch.stack([torch.softmax(m(pixels), dim=1) for m in self.members])  # (k, N, 10)
        mean = probs.mean(dim=0)  # (N, 10)
        if self.combine == "vote":
            votes = (probs == probs.amax(dim=2, keepdim=True)).to(probs.dtype).sum(dim=0)
            mean = (votes + mean) / (len(self.members) + 1)  # (N, 10), rows sum to 1
        return torch.log(mean.clamp_min(TINY)), mean


def inference_ensemble(members: list[MLP], combine: Combine) -> Ensemble:
    """The members folded for inference (masks, batchnorm, preprocessing), combined."""
    return Ensemble([inference_ready(member) for member in members], combine).eval()


@torch.no_grad()
def ensemble_probabilities(ensemble: Ensemble, x: np.ndarray, batch: int = 4096) -> np.ndarray:
    """The ensemble's probabilities (N, 10) for raw pixels x (N, 784), in batches."""
    ensemble.eval()
    chunks = [
        ensemble(torch.from_numpy(np.asarray(x[i : i + batch], dtype=np.float32)))[1].numpy()
        for i in range(0, len(x), batch)
    ]
    return np.concatenate(chunks)


def build_ensemble_onnx(members: list[MLP], combine: Combine, opset: int = 18) -> onnx.ModelProto:
    """One ONNX graph computing every member and their combination."""
    return export_classifier(inference_ensemble(members, combine), opset)
