"""An out-of-MNIST test set: handwritten digits in styles MNIST's writers rarely used, drawn
from stroke skeletons, at full resolution and as low-resolution scans.

Every image comes from this module: each digit style is a skeleton of pen strokes written here
(polylines in a unit box), drawn with a seeded random slant, rotation, width, jitter and pen
width, black on white, then either kept (`drawn`, 112×112) or scanned: a square around the digit
(0–20 % margin) shrunk to 8, 12 or 16 pixels a side (area average), the 8 pixel scans quantized
to 17 grey levels as old scanners stored them, and grown back to 112×112 (bilinear or nearest,
half each), as a low-resolution scan reaches the service. No other data set, and nothing of
MNIST: the training augmentation for these styles (pipeline/training/styles.py) edits MNIST
digits with other code, so this set is not the training data drawn again.
The styles MNIST lacks are a 1 with a long flag (with and without a foot), a crossed 7, a
closed 4 and a 9 with a small loop on a straight tail; every digit has its common style too.
Reads and writes nothing.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

CANVAS = 112
FINE = 4  # drawn at this many times the canvas, then reduced: smooth edges
SCANS = (8, 12, 16)  # scan sides in pixels
QUANTIZED = 8  # scans this small keep 17 grey levels

Stroke = list[tuple[float, float]]  # (x, y) in a unit box, y down


def arc(cx: float, cy: float, rx: float, ry: float, start: float, end: float) -> Stroke:
    """Points on an ellipse from angle `start` to `end` (degrees; 90 is the bottom, y down)."""
    angles = np.deg2rad(np.linspace(start, end, max(4, int(abs(end - start) / 12))))
    return [(cx + rx * np.cos(a), cy + ry * np.sin(a)) for a in angles]


# name: (digit, rare in MNIST, strokes)
STYLES: dict[str, tuple[int, bool, list[Stroke]]] = {
    "0": (0, False, [arc(0.5, 0.5, 0.45, 0.5, -90, 270)]),
    "1 stick": (1, False, [[(0.55, 0.0), (0.5, 1.0)]]),
    "1 long flag": (1, True, [[(0.05, 0.35), (0.6, 0.0), (0.55, 1.0)]]),
    "1 flag and foot": (
        1,
        True,
        [[(0.15, 0.3), (0.6, 0.0), (0.55, 1.0)], [(0.2, 1.0), (0.9, 1.0)]],
    ),
    "2": (2, False, [[*arc(0.5, 0.28, 0.42, 0.28, 180, 390), (0.05, 1.0), (0.95, 1.0)]]),
    "3": (
        3,
        False,
        [arc(0.5, 0.26, 0.4, 0.26, 200, 450), arc(0.5, 0.74, 0.45, 0.26, -90, 150)],
    ),
    "4 open": (4, False, [[(0.3, 0.0), (0.05, 0.65), (0.95, 0.65)], [(0.72, 0.2), (0.72, 1.0)]]),
    "4 closed": (4, True, [[(0.72, 0.0), (0.05, 0.68), (0.95, 0.68)], [(0.72, 0.0), (0.72, 1.0)]]),
    "5": (5, False, [[(0.85, 0.0), (0.25, 0.0), *arc(0.48, 0.7, 0.42, 0.3, -125, 150)]]),
    "6": (6, False, [[(0.8, 0.02), (0.45, 0.2), *arc(0.5, 0.72, 0.38, 0.28, 180, -180)]]),
    "7": (7, False, [[(0.05, 0.0), (0.95, 0.0), (0.4, 1.0)]]),
    "7 crossed": (7, True, [[(0.05, 0.0), (0.95, 0.0), (0.4, 1.0)], [(0.4, 0.5), (0.92, 0.48)]]),
    "8": (8, False, [arc(0.5, 0.25, 0.33, 0.25, -90, 270), arc(0.5, 0.73, 0.42, 0.27, -90, 270)]),
    "9": (
        9,
        False,
        [arc(0.5, 0.3, 0.42, 0.3, 0, 360), [(0.92, 0.3), (0.9, 0.7), (0.7, 0.95), (0.35, 1.0)]],
    ),
    "9 small loop": (
        9,
        True,
        [arc(0.45, 0.18, 0.35, 0.18, 0, 360), [(0.8, 0.18), (0.75, 1.0)]],
    ),
}


def pose(strokes: list[Stroke], rng: np.random.Generator) -> list[np.ndarray]:
    """The skeleton as one writer draws it: width, slant, rotation, jitter; canvas pixels."""
    width = rng.uniform(0.45, 0.75)
    slant = rng.uniform(-0.3, 0.2)  # x moves right by slant × height above the baseline
    angle = np.deg2rad(rng.uniform(-8, 8))
    height = rng.uniform(0.6, 0.8) * CANVAS
    rotate = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    centre = CANVAS / 2 + rng.uniform(-0.06, 0.06, 2) * CANVAS
    drawn = []
    for stroke in strokes:
        xy = np.array(stroke) + rng.normal(0, 0.015, (len(stroke), 2))
        xy[:, 0] = (xy[:, 0] - 0.5) * width + slant * (1 - xy[:, 1])
        xy[:, 1] -= 0.5
        drawn.append(xy @ rotate.T * height + centre)
    return drawn


def draw(strokes: list[np.ndarray], pen: float) -> np.ndarray:
    """uint8 (112, 112): the strokes in black on white, round ends, anti-aliased."""
    page = Image.new("L", (CANVAS * FINE, CANVAS * FINE), 255)
    ink = ImageDraw.Draw(page)
    r = pen * FINE / 2
    for stroke in strokes:
        points = [(float(x) * FINE, float(y) * FINE) for x, y in stroke]
        ink.line(points, fill=0, width=round(pen * FINE), joint="curve")
        for x, y in (points[0], points[-1]):
            ink.ellipse((x - r, y - r, x + r, y + r), fill=0)
    return np.asarray(page.resize((CANVAS, CANVAS), Image.Resampling.BOX))


def scan_box(image: np.ndarray, margin: float) -> tuple[int, int, int, int]:
    """A square around the ink, `margin` × its size wider each side: (left, top, right, bottom)."""
    rows, cols = np.nonzero(image < 128)
    centre = ((cols.min() + cols.max() + 1) / 2, (rows.min() + rows.max() + 1) / 2)
    half = max(cols.max() + 1 - cols.min(), rows.max() + 1 - rows.min()) * (0.5 + margin)
    return tuple(round(c + s * half) for s in (-1, 1) for c in centre)  # type: ignore[return-value]


def scan(image: np.ndarray, side: int, blocky: bool, margin: float = 0.1) -> np.ndarray:
    """The digit as a `side`-pixel scan of a square around it, grown back to 112×112."""
    box = scan_box(image, margin)  # outside the page is white paper, as Pillow's crop pads
    paper = Image.new("L", (CANVAS * 2, CANVAS * 2), 255)
    paper.paste(Image.fromarray(image), (CANVAS // 2, CANVAS // 2))
    square = paper.crop(tuple(v + CANVAS // 2 for v in box))
    small = np.asarray(square.resize((side, side), Image.Resampling.BOX))
    if side <= QUANTIZED:
        small = (np.round(small / 255 * 16) * 255 / 16).astype(np.uint8)
    grow = Image.Resampling.NEAREST if blocky else Image.Resampling.BILINEAR
    return np.asarray(Image.fromarray(small).resize((CANVAS, CANVAS), grow))


def resolutions() -> list[str]:
    """Names of the resolutions, in order: `drawn`, then each scan."""
    return ["drawn", *(f"{side} px" for side in SCANS)]


def handwriting_digits(
    per_style: int, seed: int
) -> tuple[list[np.ndarray], np.ndarray, list[str], list[str]]:
    """`per_style` writers per style, each at every resolution: images, labels, style names,
    resolution names."""
    rng = np.random.default_rng(seed)
    images, labels, styles, scans = [], [], [], []
    for name, (digit, _, strokes) in STYLES.items():
        for _ in range(per_style):
            drawn = draw(pose(strokes, rng), pen=rng.uniform(4, 18))
            blocky, margin = bool(rng.random() < 0.5), rng.uniform(0.0, 0.2)
            versions = [drawn, *(scan(drawn, side, blocky, margin) for side in SCANS)]
            for version, resolution in zip(versions, resolutions(), strict=True):
                images.append(version)
                labels.append(digit)
                styles.append(name)
                scans.append(resolution)
    return images, np.array(labels, np.int64), styles, scans


def rare_styles() -> list[str]:
    """The styles MNIST's writers rarely used."""
    return [name for name, (_, rare, _) in STYLES.items() if rare]
