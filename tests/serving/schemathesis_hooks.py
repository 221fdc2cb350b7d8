"""schemathesis hooks (SCHEMATHESIS_HOOKS=tests.serving.schemathesis_hooks): real image bytes.

The OpenAPI document declares /predict_image's files as image/png, image/jpeg, ...; without these
strategies schemathesis would fill them with random bytes, which the service rightly refuses.
"""

from __future__ import annotations

import io

import numpy as np
import schemathesis
from hypothesis import strategies as st
from PIL import Image


def encode(seed: int, width: int, height: int, mode: str, fmt: str) -> bytes:
    """A random picture of the given size and mode, encoded as PNG, JPEG or WebP."""
    rng = np.random.default_rng(seed)
    channels = {"L": (height, width), "RGB": (height, width, 3), "RGBA": (height, width, 4)}
    image = Image.fromarray(rng.integers(0, 256, channels[mode], dtype=np.uint8), mode=mode)
    buffer = io.BytesIO()
    image.convert("RGB" if fmt == "JPEG" and mode == "RGBA" else mode).save(buffer, format=fmt)
    return buffer.getvalue()


def images(fmt: str) -> st.SearchStrategy[bytes]:
    """Encoded pictures from 1×1 to 64×64 pixels."""
    sides = st.integers(1, 64)
    modes = st.sampled_from(["L", "RGB", "RGBA"])
    return st.builds(encode, st.integers(0, 2**32 - 1), sides, sides, modes, st.just(fmt))


schemathesis.openapi.media_type("image/png", images("PNG"))
schemathesis.openapi.media_type("image/jpeg", images("JPEG"))
schemathesis.openapi.media_type("image/webp", images("WEBP"))
