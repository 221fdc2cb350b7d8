"""The robustness benchmark's params and test-split sets, and the way every set reaches a model:
as PNG files read back through the deployed image path (digits/images.py), as `digits score`
reads a photo.

Sets: `clean` (a seeded subsample of the test split) and one per corruption in
pipeline/robustness_sets/corruptions.py (the same subsample, corrupted with the benchmark seed);
the font set comes from pipeline/robustness_sets/fonts.py, the handwriting set from
pipeline/robustness_sets/handwriting.py. Writes PNG files only into the
directory it is given.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from digits.contract import PIXELS, SIDE
from digits.images import load_image, to_mnist
from pipeline.config import require
from pipeline.robustness_sets.corruptions import CORRUPTIONS, corrupt

ImageSet = tuple[list[np.ndarray], np.ndarray]  # images (any size, uint8 gray), labels (N,)


@dataclass(frozen=True)
class RobustnessParams:
    """params.yaml `robustness:` group: which images the benchmark is made of."""

    # Its own seed, not base.seed: every model, whatever seed trained it, meets the same images.
    seed: int = 0
    per_kind: int = 1000  # test images per set: a seeded subsample of the test split
    font_sizes: tuple[int, ...] = (16, 28, 40)  # pixels per em on the 64×64 font canvas
    writers: int = 20  # handwriting set: writers per style, each drawn and scanned
    examples: int = 3  # images per set shown with their answers in the report

    def __post_init__(self) -> None:
        require(self.seed >= 0, "robustness.seed", "must be >= 0")
        require(self.per_kind >= 1, "robustness.per_kind", "must be >= 1")
        sizes = self.font_sizes
        require(all(8 <= s <= 44 for s in sizes), "robustness.font_sizes", "must be in 8..44")
        require(self.examples >= 0, "robustness.examples", "must be >= 0")
        require(self.writers >= 1, "robustness.writers", "must be >= 1")


def subsample(labels: np.ndarray, size: int, seed: int) -> np.ndarray:
    """Sorted indices of `size` images drawn without replacement (all of them if fewer)."""
    rng = np.random.default_rng(seed)
    size = min(size, len(labels))
    return np.sort(rng.choice(len(labels), size=size, replace=False))


def corruption_sets(x: np.ndarray, y: np.ndarray, per_kind: int, seed: int) -> dict[str, ImageSet]:
    """`clean` and every corruption of one seeded subsample of the pixels x (N, 784)."""
    keep = subsample(y, per_kind, seed)
    images = x[keep].reshape(-1, SIDE, SIDE)  # (n, 28, 28) uint8, white on black
    sets = {"clean": (list(images), y[keep])}
    for kind in CORRUPTIONS:
        sets[kind] = (list(corrupt(images, kind, seed)), y[keep])
    return sets


def image_file(directory: Path, index: int) -> Path:
    """Where through_image_files writes image `index` of a set."""
    return directory / f"{index:05d}.png"


def through_image_files(images: Sequence[np.ndarray], directory: Path) -> np.ndarray:
    """Write each image as a PNG file, read it back through the image path: uint8 (N, 784)."""
    directory.mkdir(parents=True, exist_ok=True)
    pixels = np.zeros((len(images), PIXELS), np.uint8)
    for i, image in enumerate(images):
        path = image_file(directory, i)
        Image.fromarray(image).save(path)
        pixels[i] = to_mnist(load_image(path.read_bytes())).reshape(-1)
    return pixels
