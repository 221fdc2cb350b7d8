"""The robustness benchmark's image sets, and the way they reach a model: as PNG files read back
through the deployed image path (digits/images.py), exactly as `digits score` reads a photo.

Sets: `clean` (a seeded subsample of the test split), one per corruption in
pipeline/corruptions.py (the same subsample, corrupted with the benchmark seed) and `fonts`
(pipeline/font_digits.py). Writes PNG files only into the directory it is given.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from digits.images import load_image, to_mnist
from pipeline.corruptions import CORRUPTIONS, corrupt
from pipeline.font_digits import font_digits

ImageSet = tuple[list[np.ndarray], np.ndarray]  # images (any size, uint8 gray), labels (N,)


def subsample(labels: np.ndarray, size: int, seed: int) -> np.ndarray:
    """Sorted indices of `size` images drawn without replacement (all of them if fewer)."""
    rng = np.random.default_rng(seed)
    size = min(size, len(labels))
    return np.sort(rng.choice(len(labels), size=size, replace=False))


def corruption_sets(x: np.ndarray, y: np.ndarray, per_kind: int, seed: int) -> dict[str, ImageSet]:
    """`clean` and every corruption of one seeded subsample of the pixels x (N, 784)."""
    keep = subsample(y, per_kind, seed)
    images = x[keep].reshape(-1, 28, 28)  # (n, 28, 28) uint8, white on black
    sets = {"clean": (list(images), y[keep])}
    for kind in CORRUPTIONS:
        sets[kind] = (list(corrupt(images, kind, seed)), y[keep])
    return sets


def font_set(sizes: tuple[int, ...]) -> ImageSet:
    """The printed digits of every bundled font, size and position."""
    images, labels, _ = font_digits(sizes)
    return images, labels


def through_image_files(images: Sequence[np.ndarray], directory: Path) -> np.ndarray:
    """Write each image as a PNG file, read it back through the image path: uint8 (N, 784)."""
    directory.mkdir(parents=True, exist_ok=True)
    pixels = np.zeros((len(images), 784), np.uint8)
    for i, image in enumerate(images):
        path = directory / f"{i:05d}.png"
        Image.fromarray(image).save(path)
        pixels[i] = to_mnist(load_image(path.read_bytes())).reshape(-1)
    return pixels
