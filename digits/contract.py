"""The ONNX contract: what `models/digits.onnx` takes, what it gives, and what it says of itself.

Defined once, here, in the torch-free core: export builds graphs to it; `digits verify`, the
service and the batch scorer check and read files by it. Nothing else spells these names or 784.
Pure constants; reads and writes nothing.
"""

from __future__ import annotations

import json

SIDE = 28  # an MNIST image is SIDE × SIDE
PIXELS = SIDE * SIDE
CLASSES = 10
LABELS = tuple(range(CLASSES))  # the digit each output column stands for, in order

# The graph: one input of raw pixels, two outputs of N rows each.
INPUT = "pixels"
LOGITS = "logits"
PROBABILITIES = "probabilities"
OUTPUTS = (LOGITS, PROBABILITIES)
DTYPE = "float32"
PIXEL_MIN, PIXEL_MAX = 0, 255  # raw MNIST intensities; no scaling before the graph
INPUT_SPEC = {
    "name": INPUT,
    "dtype": DTYPE,
    "shape": ["N", PIXELS],
    "range": [PIXEL_MIN, PIXEL_MAX],
}

# metadata_props: keys every exported file carries (export may add provenance keys beside them).
NAME_KEY = "model_name"
MODEL_NAME = "digits"
VERSION_KEY = "model_version"
CLASSES_KEY = "classes"
INPUT_SPEC_KEY = "input_spec"
THRESHOLD_KEY = "confidence_threshold"  # answers below it are flagged low-confidence
DESKEW_KEY = "deskew"  # "true" when the model was trained on deskewed pixels
UNKNOWN_VERSION = "unknown"

# Golden vectors (`<model>.golden.npz`): the input and both outputs, float32, and the version.
GOLDEN_ARRAYS = (INPUT, LOGITS, PROBABILITIES)
GOLDEN_VERSION = VERSION_KEY


def contract_metadata(version: str) -> dict[str, str]:
    """The metadata_props the contract requires of a file with this version."""
    return {
        NAME_KEY: MODEL_NAME,
        VERSION_KEY: version,
        CLASSES_KEY: json.dumps(list(LABELS)),
        INPUT_SPEC_KEY: json.dumps(INPUT_SPEC),
    }
