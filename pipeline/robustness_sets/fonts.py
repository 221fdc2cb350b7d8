"""An out-of-MNIST test set: the digits 0–9 printed in fonts matplotlib ships, as paper images.

Each glyph is drawn black on a white 64×64 canvas at several font sizes and positions, the way a
printed or typed digit reaches the service. The fonts come with matplotlib (a pipeline
dependency): DejaVu Sans/Serif/Mono, STIX and Computer Modern, upright, bold and italic.
Reads those font files; writes nothing.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np
from PIL import Image, ImageDraw, ImageFont

FONTS = (
    "DejaVuSans.ttf",
    "DejaVuSans-Bold.ttf",
    "DejaVuSans-Oblique.ttf",
    "DejaVuSansMono.ttf",
    "DejaVuSerif.ttf",
    "DejaVuSerif-Bold.ttf",
    "DejaVuSerif-Italic.ttf",
    "STIXGeneral.ttf",
    "STIXGeneralBol.ttf",
    "STIXGeneralItalic.ttf",
    "cmr10.ttf",
    "cmb10.ttf",
    "cmti10.ttf",
    "cmss10.ttf",
    "cmtt10.ttf",
)
CANVAS = 64
# Glyph centres as fractions of the canvas: centred, and pushed towards two corners.
POSITIONS = ((0.5, 0.5), (0.32, 0.36), (0.68, 0.64))


def font_file(name: str) -> Path:
    """Path of one of matplotlib's bundled TrueType fonts."""
    return Path(matplotlib.get_data_path()) / "fonts" / "ttf" / name


def render_digit(
    font: ImageFont.FreeTypeFont, digit: int, centre: tuple[float, float]
) -> np.ndarray:
    """uint8 (64, 64): one digit, black on white, its ink box centred at `centre` (fractions)."""
    page = Image.new("L", (CANVAS, CANVAS), 255)
    xy = (centre[0] * CANVAS, centre[1] * CANVAS)
    ImageDraw.Draw(page).text(xy, str(digit), fill=0, font=font, anchor="mm")
    return np.asarray(page)


def font_digits(sizes: tuple[int, ...]) -> tuple[list[np.ndarray], np.ndarray, list[str]]:
    """Every font × digit × size (pixels per em) × position: images, labels, font names."""
    images, labels, names = [], [], []
    for name in FONTS:
        for size in sizes:
            font = ImageFont.truetype(str(font_file(name)), size)
            for centre in POSITIONS:
                for digit in range(10):
                    images.append(render_digit(font, digit, centre))
                    labels.append(digit)
                    names.append(name.removesuffix(".ttf"))
    return images, np.array(labels, np.int64), names
