"""The corruption benchmark's image corruptions, in the spirit of MNIST-C (Mu & Gilmer 2019).

Each corruption takes one uint8 (28, 28) MNIST image (white ink on black) and a seeded numpy
Generator and returns a new uint8 (28, 28) image; `corrupt` applies one kind to a whole set so
the same seed always gives the same images. One fixed severity per kind, chosen to be hard but
still readable by a person. Training never uses these functions: its augmentations live in
pipeline/training/augment.py with other functions and other parameters.
Reads and writes no files.
"""

from __future__ import annotations

import io
import zlib
from collections.abc import Callable

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from digits.contract import SIDE

CENTRE = SIDE / 2  # Pillow's continuous coordinates put pixel centres at i + 0.5

Corruption = Callable[[np.ndarray, np.random.Generator], np.ndarray]


def to_uint8(image: np.ndarray) -> np.ndarray:
    """Round and clip float pixels to uint8 0–255."""
    return np.clip(np.round(image), 0, 255).astype(np.uint8)


def warp(image: np.ndarray, A: np.ndarray, shift: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
    """Bilinear resample of a float (28, 28) image: output offset v reads input A @ (v - shift)."""
    c = np.array([CENTRE, CENTRE])
    offset = c - A @ c - A @ np.asarray(shift)
    data = (A[0, 0], A[0, 1], offset[0], A[1, 0], A[1, 1], offset[1])
    picture = Image.fromarray(image.astype(np.float32))
    out = picture.transform((SIDE, SIDE), Image.Transform.AFFINE, data, Image.Resampling.BILINEAR)
    return np.asarray(out, dtype=np.float32)


def random_sign(rng: np.random.Generator) -> float:
    """-1 or +1 with equal odds."""
    return float(rng.choice((-1.0, 1.0)))


def shot_noise(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Poisson photon noise on the ink: few photons (12 at full white), so strokes go grainy."""
    photons = 12
    return to_uint8(rng.poisson(image / 255 * photons) / photons * 255)


def impulse_noise(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Salt and pepper: 8 % of the pixels set to black or white at random."""
    out = image.copy()
    hit = rng.random(image.shape) < 0.08
    out[hit] = rng.choice(np.array([0, 255], np.uint8), size=int(hit.sum()))
    return out


def blur(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Gaussian defocus blur, radius 1–1.5 pixels."""
    radius = rng.uniform(1.0, 1.5)
    return np.asarray(Image.fromarray(image).filter(ImageFilter.GaussianBlur(radius)))


def motion_blur(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A camera shake: the mean of 9 copies along a random direction over 4–6 pixels."""
    angle, length = rng.uniform(0, np.pi), rng.uniform(4, 6)
    steps = np.linspace(-length / 2, length / 2, 9)
    direction = np.array([np.cos(angle), np.sin(angle)])
    copies = [warp(image, np.eye(2), tuple(t * direction)) for t in steps]
    return to_uint8(np.mean(copies, axis=0))


def shear(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Horizontal shear by 0.4–0.7 (rows slide sideways in proportion to their height)."""
    s = random_sign(rng) * rng.uniform(0.4, 0.7)
    return to_uint8(warp(image, np.array([[1.0, s], [0.0, 1.0]])))


def scale(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Shrunk to 35–50 % of its size about the centre: a small digit with little detail."""
    factor = rng.uniform(0.35, 0.5)
    return to_uint8(warp(image, np.eye(2) / factor))


def rotation(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Rotated by 20–35 degrees either way."""
    theta = random_sign(rng) * np.deg2rad(rng.uniform(20, 35))
    cos, sin = np.cos(theta), np.sin(theta)
    return to_uint8(warp(image, np.array([[cos, -sin], [sin, cos]])))


def translation(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Moved 4–6 pixels along each axis, so wide digits lose an edge to the border."""
    shift = tuple(random_sign(rng) * rng.uniform(4, 6) for _ in range(2))
    return to_uint8(warp(image, np.eye(2), shift))


def contrast(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Washed out: a bright gray background (80–130) and ink only 50–80 levels above it."""
    floor, span = rng.uniform(80, 130), rng.uniform(50, 80)
    return to_uint8(floor + image.astype(np.float32) * (span / 255))


def stripe(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A scratch or ruled line: one white line, 1–2 pixels wide, from edge to opposite edge."""
    picture = Image.fromarray(image)
    draw = ImageDraw.Draw(picture)
    a, b = rng.uniform(0, SIDE, size=2)
    ends = [(a, 0), (b, SIDE)] if rng.random() < 0.5 else [(0, a), (SIDE, b)]
    draw.line(ends, fill=255, width=int(rng.integers(1, 3)))
    return np.asarray(picture)


def fog(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Uneven haze: smooth noise of three octaves, as bright as 60 % of the ink, over the image."""
    haze = np.zeros((SIDE, SIDE), np.float32)
    for cells, weight in ((3, 1.0), (6, 0.5), (12, 0.25)):
        coarse = Image.fromarray(rng.random((cells, cells)).astype(np.float32))
        haze += weight * np.asarray(coarse.resize((SIDE, SIDE), Image.Resampling.BICUBIC))
    haze = (haze - haze.min()) / (haze.max() - haze.min())  # 0–1
    strength = 0.6
    return to_uint8((image / 255 + strength * haze) / (1 + strength) * 255)


def plus_neighbours(image: np.ndarray) -> np.ndarray:
    """(5, 28, 28): each pixel and its four edge neighbours (zero outside the image)."""
    padded = np.pad(image, 1)
    return np.stack(
        [
            padded[1:-1, 1:-1],
            padded[:-2, 1:-1],
            padded[2:, 1:-1],
            padded[1:-1, :-2],
            padded[1:-1, 2:],
        ]
    )


def thin(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Thinner strokes: gray erosion by a 3×3 cross, about one pixel off each side."""
    return plus_neighbours(image).min(axis=0)


def thick(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A marker: gray dilation by a 3×3 square then a 3×3 cross, two pixels onto each side."""
    square = np.asarray(Image.fromarray(image).filter(ImageFilter.MaxFilter(3)))
    return plus_neighbours(square).max(axis=0)


def low_resolution(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Averaged down to 9×9–11×11 pixels, then blown up blocky (nearest neighbour)."""
    side = int(rng.integers(9, 12))
    small = Image.fromarray(image).resize((side, side), Image.Resampling.BOX)
    return np.asarray(small.resize((SIDE, SIDE), Image.Resampling.NEAREST))


def jpeg(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Saved as a JPEG at quality 5–10 and decoded again: blocking and ringing."""
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=int(rng.integers(5, 11)))
    return np.asarray(Image.open(buffer).convert("L"))


def inversion(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Black ink on white paper, as most scans and photos are."""
    return 255 - image


CORRUPTIONS: dict[str, Corruption] = {
    "shot_noise": shot_noise,
    "impulse_noise": impulse_noise,
    "blur": blur,
    "motion_blur": motion_blur,
    "shear": shear,
    "scale": scale,
    "rotation": rotation,
    "translation": translation,
    "contrast": contrast,
    "stripe": stripe,
    "fog": fog,
    "thin": thin,
    "thick": thick,
    "low_resolution": low_resolution,
    "jpeg": jpeg,
    "inversion": inversion,
}


def corrupt(images: np.ndarray, kind: str, seed: int) -> np.ndarray:
    """One corruption applied to each uint8 (N, 28, 28) image; the same seed, the same output."""
    # Each kind draws from its own stream, so adding a kind changes no other kind's images.
    rng = np.random.default_rng([seed, zlib.crc32(kind.encode())])
    apply = CORRUPTIONS[kind]
    return np.stack([apply(image, rng) for image in images]) if len(images) else images.copy()
