"""Stroke width: measured on a digit's ink, and brought toward MNIST's where it is far off.

A pen line on a large scan shrinks to a hair once the digit is scaled into 20×20, and a marker
on a small canvas to a blob; the model only knows MNIST's strokes, about 2 pixels wide. Widths
MNIST itself has are left alone, so MNIST-like inputs pass unchanged. Pure numpy and Pillow;
reads and writes no files.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageFilter

# Median stroke width of MNIST digits in 28×28 pixels (2·area/perimeter of the ink above half
# level, 5,000 training images); 1st and 99th percentiles 1.1 and 3.6, the band left alone.
MNIST_WIDTH = 2.0
BAND = (1.1, 3.6)
FINE = 4  # strokes are measured and adjusted at this many times the final scale
MAX_RADIUS = 12  # fine pixels a stroke is grown or thinned by at most: bounds the filter's cost


def stroke_width(ink: np.ndarray) -> float:
    """Mean stroke width in pixels: 2·area/perimeter of the ink above half its peak."""
    peak = float(ink.max())
    if peak <= 0:
        return 0.0
    mask = ink >= peak / 2
    edges = (mask[1:] != mask[:-1]).sum() + (mask[:, 1:] != mask[:, :-1]).sum()
    edges += mask[0].sum() + mask[-1].sum() + mask[:, 0].sum() + mask[:, -1].sum()
    return 2 * float(mask.sum()) / float(edges)


def resized(ink: np.ndarray, size: tuple[int, int], method: Image.Resampling) -> np.ndarray:
    """Float ink resized to (width, height), clipped to 0–255."""
    image = Image.fromarray(ink.astype(np.float32), mode="F").resize(size, method)
    return np.clip(np.asarray(image), 0, 255)


def fine_copy(crop: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The crop at FINE times the final (width, height), its peak restored to 255."""
    fine = (size[0] * FINE, size[1] * FINE)
    method = Image.Resampling.BOX if crop.shape[1] > fine[0] else Image.Resampling.BILINEAR
    ink = resized(crop, fine, method)
    peak = float(ink.max())
    return ink * (255 / peak) if peak > 0 else ink


def restroke(ink: np.ndarray, width: float) -> np.ndarray:
    """Grow (dilate) or thin (erode) strokes of `width` toward MNIST's, at the fine scale."""
    target = MNIST_WIDTH * FINE
    radius = round((target - width) / 2)
    # Thinning stops at a quarter of the stroke, so unevenly thick strokes keep their thin parts.
    radius = int(np.clip(radius, -width / 4, MAX_RADIUS))
    if radius == 0:
        return ink
    rank = ImageFilter.MaxFilter if radius > 0 else ImageFilter.MinFilter
    image = Image.fromarray(ink.astype(np.float32), mode="F").filter(rank(2 * abs(radius) + 1))
    return np.asarray(image)


def in_band(digit: np.ndarray) -> bool:
    """Whether a digit scaled into the box has strokes as wide as MNIST's commonly are."""
    return BAND[0] <= stroke_width(digit) <= BAND[1]


def normalized_strokes(crop: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The crop scaled to (width, height), its strokes grown or thinned to MNIST's width."""
    fine = fine_copy(crop, size)
    return resized(restroke(fine, stroke_width(fine)), size, Image.Resampling.BOX)
