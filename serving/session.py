"""ONNX Runtime session factory: loads models/digits.onnx on CUDA when it really works, else CPU.

Reads an ONNX file with the digits.onnx contract (digits/contract.py: one input of N raw pixel rows,
outputs of N logit and probability rows, metadata in metadata_props). Used by the BentoML service
(`digits serve`) and by `digits score`; imports neither torch nor `pipeline`.
"""

from __future__ import annotations

import contextlib
import ctypes
import io
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from digits.contract import (
    DESKEW_KEY,
    INPUT,
    LOGITS,
    OUTPUTS,
    PROBABILITIES,
    THRESHOLD_KEY,
    UNKNOWN_VERSION,
    VERSION_KEY,
)
from digits.images import upright_rows

log = logging.getLogger(__name__)

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
PROVIDERS = ("auto", "cuda", "cpu")
# Without the contract's THRESHOLD_KEY in the metadata (a threshold chosen on dev), this one.
DEFAULT_THRESHOLD = 0.5  # without the key: under 0.5, another digit may well be as likely


class ProviderError(RuntimeError):
    """The CUDA provider was asked for but cannot be used on this host."""


class ModelError(ValueError):
    """The file is not an ONNX model with the digits contract."""


@dataclass
class OnnxModel:
    """A loaded digits model: the session, the provider it runs on and its metadata."""

    session: ort.InferenceSession
    provider: str
    metadata: dict[str, str]
    version: str
    threshold: float = DEFAULT_THRESHOLD  # answers under it are flagged as low confidence
    deskew: bool = False  # inputs are deskewed (digits.images.upright) before the model

    def predict(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Float32 (N, PIXELS) pixels 0–255 -> (logits, probabilities), each (N, CLASSES)."""
        if self.deskew:  # a model trained on deskewed digits sees every input deskewed
            pixels = upright_rows(pixels)
        logits, probabilities = self.session.run(list(OUTPUTS), {INPUT: pixels})
        return logits, probabilities


def host_threads() -> int:
    """CPU cores this process may use (affinity/cgroup aware, unlike os.cpu_count)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _loadable(library: str) -> bool:
    try:
        ctypes.CDLL(library)
    except OSError:
        return False
    return True


def cuda_problem() -> str | None:
    """Why the CUDA provider cannot load here, or None when its libraries all load."""
    if CUDA not in ort.get_available_providers():
        return "this onnxruntime build has no CUDA provider (install onnxruntime-gpu)"
    if not _loadable("libcuda.so.1"):
        return "no NVIDIA driver (libcuda.so.1 not found): no GPU on this host"
    # preload_dlls loads the CUDA/cuDNN wheels of the `gpu` extra; it prints, so keep it quiet.
    with contextlib.redirect_stdout(io.StringIO()) as printed:
        ort.preload_dlls()
    if printed.getvalue().strip():
        log.debug("onnxruntime.preload_dlls: %s", printed.getvalue().strip())
    major = (ort.cuda_version or "12").split(".")[0]
    missing = [
        lib
        for lib in (f"libcudart.so.{major}", f"libcublasLt.so.{major}", "libcudnn.so.9")
        if not _loadable(lib)
    ]
    if missing:
        return f"CUDA runtime libraries missing ({', '.join(missing)}): pip install 'digits[gpu]'"
    return None


def session_options(threads: int | None) -> ort.SessionOptions:
    """Options for a serving session: bounded intra-op threads that sleep instead of spinning."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or host_threads()
    options.inter_op_num_threads = 1
    # Spinning worker threads burn the cores the HTTP workers need between small requests.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3
    return options


def load_model(path: Path | str, provider: str = "auto", threads: int | None = None) -> OnnxModel:
    """Open an ONNX model on CUDA (auto/cuda) or CPU; the provider in use is logged."""
    if provider not in PROVIDERS:
        raise ValueError(f"provider must be one of {', '.join(PROVIDERS)}, not {provider!r}")
    problem = cuda_problem() if provider != "cpu" else "CPU requested"
    if provider == "cuda" and problem:
        raise ProviderError(f"CUDA provider requested but unusable: {problem}")
    if not Path(path).is_file():
        raise FileNotFoundError(f"model not found: {path}")
    wanted = [CPU] if problem else [CUDA, CPU]
    try:
        session = ort.InferenceSession(str(path), session_options(threads), providers=wanted)
    except Exception as err:  # onnxruntime's errors share no base class but Exception
        raise ModelError(f"{path}: not a loadable ONNX model ({err})") from None
    names = {o.name for o in session.get_outputs()}
    if session.get_inputs()[0].name != INPUT or not set(OUTPUTS) <= names:
        expected = f"input {INPUT!r} and outputs {LOGITS!r}, {PROBABILITIES!r}"
        raise ModelError(f"{path}: expected {expected}")
    used = session.get_providers()[0]
    if provider == "cuda" and used != CUDA:
        raise ProviderError("CUDA provider requested but the session fell back to CPU")
    if provider == "auto" and used != CUDA:
        log.warning("CUDA unavailable (%s); running on %s", problem or "session refused it", used)
    log.info("loaded %s on %s", path, used)
    metadata = dict(session.get_modelmeta().custom_metadata_map)
    version = metadata.get(VERSION_KEY, UNKNOWN_VERSION)
    return OnnxModel(session, used, metadata, version, *answer_settings(metadata, path))


def answer_settings(metadata: dict[str, str], path: Path | str) -> tuple[float, bool]:
    """The confidence threshold and deskew flag in the model's metadata (else the defaults)."""
    try:
        threshold = float(metadata.get(THRESHOLD_KEY, DEFAULT_THRESHOLD))
    except ValueError:
        threshold = -1.0
    if not 0 <= threshold <= 1:
        error = (
            f"metadata {THRESHOLD_KEY} must be a probability 0–1, not {metadata[THRESHOLD_KEY]!r}"
        )
        raise ModelError(f"{path}: {error}")
    deskew = metadata.get(DESKEW_KEY, "false").lower()
    if deskew not in ("true", "false"):
        raise ModelError(f"{path}: metadata {DESKEW_KEY} must be true or false, not {deskew!r}")
    return threshold, deskew == "true"
