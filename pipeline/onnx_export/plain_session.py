"""Scoring an ONNX file the way any user without our code would: a plain CPU session, batched.

Shared by the stages and tools that check what export wrote (export, robustness, ensemble), and
free of torch, so the robustness stage does not load it. Reads only the ONNX file it is given.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort

from digits.contract import CLASSES, INPUT, PROBABILITIES

BATCH = 4096


def cpu_session(path: Path) -> ort.InferenceSession:
    """A plain ONNX Runtime CPU session, as any user without our code would open it."""
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def onnx_probabilities(session: ort.InferenceSession, x: np.ndarray) -> np.ndarray:
    """Probabilities (N, 10) of raw pixels x (N, 784) from an ONNX session, in batches."""
    chunks = [
        session.run([PROBABILITIES], {INPUT: x[i : i + BATCH].astype(np.float32)})[0]
        for i in range(0, len(x), BATCH)
    ]
    return np.concatenate(chunks) if chunks else np.zeros((0, CLASSES), np.float32)
