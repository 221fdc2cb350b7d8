"""Helpers the digits tests share: a '4' drawn on paper, and when two 28×28 digits look alike."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw


def four(size: tuple[int, int] = (120, 160), ink: int = 0, paper: int = 255) -> Image.Image:
    """A '4' of three strokes, antialiased (drawn at 4× and reduced), on plain paper."""
    big = Image.new("L", (size[0] * 4, size[1] * 4), paper)
    draw = ImageDraw.Draw(big)
    w, h = big.size
    width = max(4, w // 12)
    draw.line([(int(w * 0.6), int(h * 0.15)), (int(w * 0.2), int(h * 0.6))], ink, width)
    draw.line([(int(w * 0.2), int(h * 0.6)), (int(w * 0.85), int(h * 0.6))], ink, width)
    draw.line([(int(w * 0.65), int(h * 0.3)), (int(w * 0.65), int(h * 0.88))], ink, width)
    return big.resize(size, Image.Resampling.BOX)


def close(a: np.ndarray, b: np.ndarray, mean: float = 4.0) -> bool:
    """Two 28×28 digits that differ by at most `mean` levels per pixel on average."""
    return float(np.abs(a.astype(float) - b.astype(float)).mean()) <= mean
