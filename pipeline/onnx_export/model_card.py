"""The model card (models/MODEL_CARD.md): what the model is for, how good it is, how to call it.

Rendered by the `export` stage (`digits export`) from its report; the graph's names, sizes and
metadata keys come from digits.contract. Nothing here reads files.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from digits.contract import (
    INPUT,
    LOGITS,
    NAME_KEY,
    PIXELS,
    PROBABILITIES,
    SIDE,
    THRESHOLD_KEY,
    VERSION_KEY,
)

CARD = """\
# digits — model card

| | |
|---|---|
| model | `{name}` version `{version}` ({model} network) |
| file | `{onnx}` ({size_kb:.1f} kB, opset {opset}); int8 variant `{int8}` ({int8_kb:.1f} kB) |
| input | `{input}` float32 N×{pixels}, raw grey levels 0–255 (white ink on black), dynamic N |
| outputs | `{logits}` and `{probabilities}` (softmax), float32 N×10, classes 0–9 |
| inputs (SHA-256) | params `{params_digest:.12}`, weights `{checkpoint:.12}`, test `{test:.12}` |

## Intended use
Recognising one handwritten digit per image, centred in a {side}×{side} grey image the way MNIST
images are, e.g. a digit drawn on the demo page or a scanned form field cropped to one digit.
It is a teaching and demonstration model for a reproducible train-to-serve pipeline.

## Data
MNIST: 60,000 training images (split into train and dev, stratified, seeded) and the official
10,000 test images, touched only by the evaluate and export stages. Preprocessing (scaling and
any whitening, fit on the training split only) is in the graph, folded into the first layer
unless that would make the model larger, so the file takes raw pixels.

## Metrics
| metric | value |
|---|---|
| dev accuracy (torch) | {dev_accuracy:.4f} |
| test accuracy (torch, recorded by evaluate) | {test_accuracy:.4f} |
| test accuracy (this ONNX file, ONNX Runtime CPU) | {onnx_accuracy:.4f} |
| max \\|Δprobability\\| ONNX vs torch, whole test set | {max_diff:.2e} |
| argmax agreement ONNX vs torch | {agreement:.4%} |
| learned-weight sparsity (the fixed preprocessing map not counted) | {sparsity:.2%} |
| nonzero weights in the graph | {weights_nonzero:,} |
| preprocessing map | {preprocess_map} |
| multiply-adds per image (nonzero weights + map) | {macs:,} |
| int8 test accuracy | {int8_accuracy:.4f} |
| low-confidence threshold (chosen on dev) | {threshold:.4f} |
| test answers below it / their accuracy | {flagged_share:.2%} / {flagged_accuracy} |

Answers whose confidence is below the threshold are flagged `low_confidence` by the service
and `digits score`. The threshold is chosen on dev, never test: the largest set of least
confident dev answers that are right at most `evaluate.flag_accuracy` of the time (0.6 in the
default params.yaml) is flagged; a threshold of 0 means no such set existed, and nothing is.

## Limitations
- Trained on MNIST only: digits written by US Census staff and students, size-normalised and
  centred. Off-centre, rotated, thick or photographed digits, or dark ink on a light
  background, are out of distribution and score worse; invert and centre them first.
- The network itself always answers one of 0–9. Pictures sent through the image path
  (`/predict_image`, `digits score` on image files) that hold no digit (blank, one colour,
  noise, too little ink) are answered "no digit" before the network runs; a letter or other
  drawing still gets a digit, often flagged low-confidence. The probabilities are only as
  calibrated as they are on MNIST.
- The int8 variant trades a little accuracy for size; check its figures above before use.
  Its speed depends on the CPU: `python bench/onnx_latency.py` measures it on yours.

## How to check it
`digits verify {onnx}` runs the file on its golden vectors (the `.golden.npz` beside it: inputs
and the outputs this file gave at export) and checks its metadata; the service does the same
at startup and refuses a file that fails.

## How to call it
HTTP (`digits serve --model {onnx}`):
```
curl -s localhost:3000/predict -H 'content-type: application/json' \\
     -d '{{"pixels": [[0, 0, ..., 0]]}}'   # {pixels} numbers 0-255 per image, or {side}x{side}
```
Batch CLI (PNG/JPEG/BMP/GIF/WebP, IDX, .npy/.npz, CSV or Parquet inputs; CSV
`source,digit,confidence[,p0…p9]`):
`digits score {onnx} images/ -o predictions.csv --probabilities`

Plain ONNX Runtime, no project code:
```python
import numpy as np, onnxruntime as ort
session = ort.InferenceSession("{onnx}", providers=["CPUExecutionProvider"])
pixels = images.reshape(-1, {pixels}).astype(np.float32)  # raw 0-255
logits, probabilities = session.run(["{logits}", "{probabilities}"], {{"{input}": pixels}})
digits = probabilities.argmax(axis=1)
```
"""


def describe_map(entries: int) -> str:
    """The preprocessing map's place in the graph, in words."""
    if not entries:
        return "folded into the first layer"
    return f"its own MatMul, {entries:,} entries (folding it would make the model larger)"


def describe_share(share: float | None) -> str:
    """A share as a percentage, or a dash when there is none (nothing was flagged)."""
    return "—" if share is None or math.isnan(share) else f"{share:.2%}"


def render_card(report: dict[str, Any], onnx_path: Path, int8_path: Path) -> str:
    """The model card's Markdown, from the export report and its metadata."""
    meta, int8, size = report["metadata"], report["int8"], report["deployed"]
    flags = report["low_confidence"]
    return CARD.format(
        name=meta[NAME_KEY],
        version=meta[VERSION_KEY],
        model=report["model"],
        onnx=onnx_path,
        int8=int8_path,
        size_kb=report["file_bytes"] / 1024,
        int8_kb=int8["file_bytes"] / 1024,
        opset=report["opset"],
        params_digest=meta["params_digest"],
        checkpoint=meta["checkpoint_sha256"],
        test=meta["test_sha256"],
        dev_accuracy=float(meta["dev_accuracy"]),
        test_accuracy=float(meta["test_accuracy"]),
        onnx_accuracy=report["test_accuracy"],
        max_diff=report["max_abs_prob_diff"],
        agreement=report["argmax_agreement"],
        sparsity=float(meta["sparsity"]),
        weights_nonzero=size["weights_nonzero"],
        preprocess_map=describe_map(size["preprocess_map_entries"]),
        macs=size["macs_per_image"],
        int8_accuracy=int8["test_accuracy"],
        threshold=float(meta[THRESHOLD_KEY]),
        flagged_share=flags["flagged_share"],
        flagged_accuracy=describe_share(flags["flagged_accuracy"]),
        input=INPUT,
        logits=LOGITS,
        probabilities=PROBABILITIES,
        pixels=PIXELS,
        side=SIDE,
    )
