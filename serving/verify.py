"""`digits verify MODEL`: check an ONNX file against its golden vectors and its metadata.

Reads MODEL and the golden vectors beside it (digits.golden); writes nothing. The service runs
the same check at startup, so a tampered or mismatched model is refused before it answers.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import click
import numpy as np

from digits.contract import CLASSES_KEY, INPUT, LABELS, MODEL_NAME, NAME_KEY, PIXELS, VERSION_KEY
from digits.errors import DataError
from digits.golden import Golden, golden_path, read_golden
from serving.session import ModelError, OnnxModel, load_model

log = logging.getLogger(__name__)

# Run-to-run ONNX Runtime differences (thread counts, CPU kinds) stay far below this.
TOLERANCE = 1e-4


class VerifyError(ValueError):
    """A model that fails its golden vectors or its metadata contract."""


def check_metadata(model: OnnxModel, golden: Golden) -> None:
    """The contract the metadata promises: name, classes, input shape, and the golden's version."""
    meta = model.metadata
    if meta.get(NAME_KEY) != MODEL_NAME:
        raise VerifyError(f"metadata {NAME_KEY} is {meta.get(NAME_KEY)!r}, not {MODEL_NAME!r}")
    if json.loads(meta.get(CLASSES_KEY, "null")) != list(LABELS):
        raise VerifyError(f"metadata {CLASSES_KEY} are {meta.get(CLASSES_KEY)!r}, not 0–9")
    shape = model.session.get_inputs()[0].shape
    if len(shape) != 2 or shape[1] != PIXELS:
        raise VerifyError(f"input {INPUT!r} has shape {shape}, not N×{PIXELS}")
    if model.version != golden.model_version:
        raise VerifyError(
            f"{VERSION_KEY} {model.version} differs from the golden vectors' "
            f"{golden.model_version}: the file is not the one they were made for"
        )


def check_outputs(model: OnnxModel, golden: Golden) -> float:
    """Max |Δ| of logits and probabilities against the golden ones; VerifyError past TOLERANCE."""
    logits, probabilities = model.predict(np.asarray(golden.pixels, np.float32))
    diff = max(
        float(np.abs(logits - golden.logits).max()),
        float(np.abs(probabilities - golden.probabilities).max()),
    )
    if not diff <= TOLERANCE or (probabilities.argmax(1) != golden.probabilities.argmax(1)).any():
        raise VerifyError(
            f"outputs differ from the golden vectors (max |Δ| {diff:.2e}, limit {TOLERANCE:.0e})"
        )
    return diff


def verify_model(model: OnnxModel, path: Path) -> str:
    """Check a loaded model against the golden vectors beside `path`; a one-line summary."""
    golden_file = golden_path(path)
    if not golden_file.is_file():
        raise VerifyError(f"no golden vectors beside it ({golden_file.name})")
    golden = read_golden(golden_file)
    check_metadata(model, golden)
    diff = check_outputs(model, golden)
    return f"{len(golden.pixels)} golden vectors agree (max |Δ| {diff:.1e}), metadata consistent"


def startup_check(model: OnnxModel, path: Path) -> str:
    """What the service reports: 'verified', or 'unverified' when no golden vectors exist.

    A model that has golden vectors and fails them raises VerifyError: better no service than
    one answering with a tampered or mismatched file.
    """
    if not golden_path(path).is_file():
        log.warning("%s: no golden vectors beside it; serving it unverified", path)
        return "unverified"
    try:
        log.info("%s: %s", path, verify_model(model, path))
    except DataError as err:
        raise VerifyError(str(err)) from None
    return "verified"


@click.command("verify")
@click.argument("model", type=click.Path(dir_okay=False, exists=True, path_type=Path))
def verify(model: Path) -> None:
    """Check MODEL against its golden vectors (MODEL's stem + .golden.npz) and its metadata."""
    try:
        loaded = load_model(model, provider="cpu")
        summary = verify_model(loaded, model)
    except (VerifyError, ModelError, DataError) as err:
        raise click.ClickException(f"{model}: {err}") from None
    click.echo(f"{model}: verified: {summary} (version {loaded.version})")
