"""Image preprocessing shared by `POST /predict_image` and `digits score`: bytes -> MNIST pixels.

Decodes PNG/JPEG/BMP/GIF bytes safely (pixel limit, truncation and format errors become
ImageError) and turns any picture of one digit into a 28×28 uint8 array the way MNIST was made:
white digit on black, cropped, scaled to fit 20×20, centred by centre of mass in 28×28. Also
checks that pixels given as numbers (JSON, .npy, CSV) are finite and 0–255, for both sides.
Reads and writes no files.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Callable

import numpy as np
from PIL import Image

FORMATS = ("PNG", "JPEG", "BMP", "GIF")
MAX_PIXELS = 4096 * 4096  # far above any digit photo; stops decompression bombs before decoding
BOX, SIZE = 20, 28  # MNIST: digit scaled into a 20×20 box, placed in a 28×28 field
MIN_CONTRAST = 16  # ink brighter than the background by less than this is a blank image
INK = 32  # pixels at least this far above the background count for the bounding box


class ImageError(ValueError):
    """Bytes that are not a usable image: unknown format, truncated, too large."""


def open_image(data: bytes, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Read an image's header only (cheap), refusing empty data and sizes over max_pixels."""
    if not data:
        raise ImageError("empty upload: no image data")
    image = Image.open(io.BytesIO(data), formats=FORMATS)
    if image.width * image.height > max_pixels:
        raise ImageError(
            f"image too large: {image.width}×{image.height} pixels (limit {max_pixels})"
        )
    return image


def image_pixels(data: bytes, max_pixels: int = MAX_PIXELS) -> int:
    """Width × height from the image's header, without decoding it; ImageError if unusable."""
    width, height = decoded(lambda: open_image(data, max_pixels)).size
    return width * height


def load_image(data: bytes, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Decode image bytes fully, refusing bombs, truncation and unsupported formats."""

    def load() -> Image.Image:
        image = open_image(data, max_pixels)  # the size is checked before any decoding
        image.load()
        return image

    return decoded(load)


def decoded(read: Callable[[], Image.Image]) -> Image.Image:
    """Run a Pillow read, turning its many failure types into ImageError."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = read()
    except ImageError:
        raise
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as err:
        raise ImageError(f"image too large (decompression bomb): {err}") from None
    except Image.UnidentifiedImageError:
        raise ImageError(f"not an image, or not one of {', '.join(FORMATS)}") from None
    except (OSError, SyntaxError, ValueError, EOFError) as err:
        raise ImageError(f"corrupt or truncated image ({err})") from None
    return image


def to_gray(image: Image.Image) -> np.ndarray:
    """Float (H, W) luminance 0–255; transparent pixels take the colour opposite the strokes."""
    if image.mode == "L":  # the common case (MNIST-like PNGs): no conversion needed
        return np.asarray(image, dtype=np.float32)
    rgba = np.asarray(image.convert("RGBA"), dtype=np.float32)  # (H, W, 4)
    gray = rgba[..., :3] @ np.float32([0.299, 0.587, 0.114])  # ITU-R 601-2, as Pillow's "L"
    alpha = rgba[..., 3] / 255
    if alpha.min() == 1 or alpha.max() == 0:
        return gray
    # Canvas drawings are often strokes on a transparent field: put them on a contrasting one.
    stroke = np.average(gray, weights=alpha)
    background = 255.0 if stroke < 128 else 0.0
    return gray * alpha + background * (1 - alpha)


def to_ink(gray: np.ndarray) -> np.ndarray:
    """Float (H, W) ink 0–255 on a zero background; a light background means dark ink."""
    background = float(np.median(np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])))
    if background > 127:
        gray, background = 255 - gray, 255 - background
    span = float(gray.max()) - background
    if span < MIN_CONTRAST:
        return np.zeros_like(gray)
    return np.clip((gray - background) * (255 / span), 0, 255)


def center_of_mass(ink: np.ndarray) -> tuple[float, float]:
    """(row, column) of the ink's centre of mass."""
    rows, cols = np.indices(ink.shape)
    total = ink.sum()
    return float((rows * ink).sum() / total), float((cols * ink).sum() / total)


def to_mnist(image: Image.Image) -> np.ndarray:
    """Any picture of one digit -> uint8 (28, 28) the MNIST way; a blank picture -> zeros."""
    ink = to_ink(to_gray(image))
    rows, cols = np.nonzero(ink >= INK)
    out = np.zeros((SIZE, SIZE), np.uint8)
    if rows.size == 0:
        return out
    crop = ink[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
    h, w = crop.shape
    scale = BOX / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    box = Image.fromarray(crop.astype(np.float32), mode="F").resize(size, Image.Resampling.LANCZOS)
    digit = np.clip(np.asarray(box), 0, 255)
    if digit.sum() == 0:
        return out
    cy, cx = center_of_mass(digit)
    # Shift so the centre of mass lands on the field's centre, keeping the whole digit inside.
    top = min(max(round(SIZE / 2 - cy), 0), SIZE - digit.shape[0])
    left = min(max(round(SIZE / 2 - cx), 0), SIZE - digit.shape[1])
    out[top : top + digit.shape[0], left : left + digit.shape[1]] = np.round(digit)
    return out


def pixel_problem(pixels: np.ndarray, first_row: int = 0) -> str | None:
    """What makes rows of pixels not finite numbers 0–255, naming the first bad row; else None."""
    if pixels.dtype == np.uint8 or pixels.size == 0:
        return None
    # Two vectorized passes decide the common case; NaN propagates through min and max.
    if pixels.min() >= 0 and pixels.max() <= 255:
        return None
    rows = pixels.reshape(len(pixels), -1)  # (N, 784)
    bad = ~((rows >= 0) & (rows <= 255))  # NaN compares false, so it counts as bad
    row = int(bad.any(axis=1).argmax())
    value = rows[row][bad[row]][0]
    return f"row {first_row + row} has pixel value {value:g} (pixels must be finite numbers 0–255)"
