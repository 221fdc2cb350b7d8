"""Image preprocessing shared by `POST /predict_image` and `digits score`: bytes -> MNIST pixels.

Decodes PNG/JPEG/BMP/GIF/WebP bytes safely (pixel limit, truncation and format errors become
ImageError; an animated GIF or WebP is read as its first frame) and turns any picture of one
digit into a 28×28 uint8 array the way MNIST was made: white digit on black, cropped, scaled to
fit 20×20, centred by centre of mass in 28×28. The ink comes from digits/ink.py (modes, alpha,
lighting, noise; or why the picture has no digit), the stroke width from digits/strokes.py;
`upright` is the optional deskew, a pure function of the 28×28 pixels that training applies too.
Also checks that pixels given as numbers (JSON, .npy, CSV) are finite and 0–255, and which rows
of them are blank, for both sides. Reads and writes no files.
"""

from __future__ import annotations

import io
import struct
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image

from digits.contract import SIDE
from digits.ink import MIN_CONTRAST, to_gray, to_ink
from digits.strokes import in_band, normalized_strokes

# The formats decoded: Pillow's name -> the name an error message gives.
FORMATS = {"PNG": "PNG", "JPEG": "JPEG", "BMP": "BMP", "GIF": "GIF", "WEBP": "WebP"}
MAX_PIXELS = 4096 * 4096  # far above any digit photo; stops decompression bombs before decoding
BOX, SIZE = 20, SIDE  # MNIST: digit scaled into a 20×20 box, placed in a 28×28 field
INK = 32  # ink at least this bright counts for the bounding box
MAX_SKEW = 1.0  # deskew shears by at most 45°: steeper "slants" are shapes, not handwriting


class ImageError(ValueError):
    """Bytes that are not a usable image: unknown format, truncated, too large."""


def check_size(width: int, height: int, max_pixels: int) -> None:
    """ImageError when width × height is over max_pixels."""
    if width * height > max_pixels:
        raise ImageError(f"image too large: {width}×{height} pixels (limit {max_pixels})")


def webp_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) a WebP file's header declares (RFC 9649); None if data is not WebP."""
    if data[:4] != b"RIFF" or data[8:12] != b"WEBP":
        return None
    chunk, head = data[12:16], data[20:30]  # the first chunk's type and the start of its data
    if chunk == b"VP8 " and len(head) == 10 and head[3:6] == b"\x9d\x01\x2a":  # a key frame
        width, height = struct.unpack("<HH", head[6:10])
        return width & 0x3FFF, height & 0x3FFF  # the top two bits are a scaling hint
    if chunk == b"VP8L" and len(head) >= 5 and head[0] == 0x2F:  # the lossless signature
        bits = int.from_bytes(head[1:5], "little")
        return (bits & 0x3FFF) + 1, (bits >> 14 & 0x3FFF) + 1
    if chunk == b"VP8X" and len(head) == 10:  # the canvas that every frame is drawn on
        return int.from_bytes(head[4:7], "little") + 1, int.from_bytes(head[7:10], "little") + 1
    raise ImageError("corrupt or truncated image (a WebP header without its size)")


def open_image(data: bytes, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Read an image's header only (cheap), refusing empty data and sizes over max_pixels."""
    if not data:
        raise ImageError("empty upload: no image data")
    # Pillow opens a WebP by building libwebp's decoder, which sizes its canvas from the header
    # before we could check it: so the WebP header is read here first.
    if (size := webp_size(data)) is not None:
        check_size(*size, max_pixels)
    image = Image.open(io.BytesIO(data), formats=list(FORMATS))
    check_size(image.width, image.height, max_pixels)
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
        raise ImageError(f"not an image, or not one of {', '.join(FORMATS.values())}") from None
    except (OSError, SyntaxError, ValueError, EOFError) as err:
        raise ImageError(f"corrupt or truncated image ({err})") from None
    return image


@dataclass(frozen=True)
class Prepared:
    """One picture made ready for the model: MNIST pixels, or why it holds no digit."""

    pixels: np.ndarray  # uint8 (28, 28); all zeros when there is no digit
    reason: str | None = None  # why there is no digit; None when there is one


def center_of_mass(ink: np.ndarray) -> tuple[float, float]:
    """(row, column) of the ink's centre of mass."""
    rows, cols = np.indices(ink.shape)
    total = ink.sum()
    return float((rows * ink).sum() / total), float((cols * ink).sum() / total)


def fit_box(crop: np.ndarray) -> np.ndarray:
    """Cropped ink scaled to fit BOX×BOX keeping its aspect, strokes brought toward MNIST's."""
    h, w = crop.shape
    scale = BOX / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    box = Image.fromarray(crop.astype(np.float32), mode="F").resize(size, Image.Resampling.LANCZOS)
    digit = np.clip(np.asarray(box), 0, 255)
    # MNIST-like strokes pass as they are; a hairline or a blob is redrawn from the crop.
    return digit if in_band(digit) else normalized_strokes(crop, size)


def place(digit: np.ndarray) -> np.ndarray:
    """A digit of at most 28×28 in the 28×28 field, its centre of mass at the centre."""
    out = np.zeros((SIZE, SIZE), np.uint8)
    cy, cx = center_of_mass(digit)
    # Shift so the centre of mass lands on the field's centre, keeping the whole digit inside.
    top = min(max(round(SIZE / 2 - cy), 0), SIZE - digit.shape[0])
    left = min(max(round(SIZE / 2 - cx), 0), SIZE - digit.shape[1])
    out[top : top + digit.shape[0], left : left + digit.shape[1]] = np.round(digit)
    return out


def prepare(image: Image.Image) -> Prepared:
    """Any picture of one digit -> MNIST pixels the MNIST way, or the reason it has no digit."""
    ink, reason = to_ink(to_gray(image))
    if ink is None:
        return Prepared(np.zeros((SIZE, SIZE), np.uint8), reason)
    rows, cols = np.nonzero(ink >= INK)
    if rows.size == 0:  # only faint ink: too little to place
        rows, cols = np.nonzero(ink)
    digit = fit_box(ink[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1])
    if digit.sum() == 0:
        return Prepared(np.zeros((SIZE, SIZE), np.uint8), "too little ink to place a digit")
    return Prepared(place(digit))


def to_mnist(image: Image.Image) -> np.ndarray:
    """Any picture of one digit -> uint8 (28, 28) the MNIST way; zeros when it has no digit."""
    return prepare(image).pixels


def upright(pixels: np.ndarray) -> np.ndarray:
    """Deskew a 28×28 digit by its second moments: shear its slant away about its centre.

    A pure function of the pixels, so training (pipeline) and serving apply the same one.
    """
    ink = pixels.astype(np.float64)
    total = ink.sum()
    if total == 0:
        return pixels.copy()
    rows, cols = np.indices(ink.shape)
    cy, cx = center_of_mass(ink)
    mu02 = ((rows - cy) ** 2 * ink).sum() / total  # variance down the rows
    mu11 = ((rows - cy) * (cols - cx) * ink).sum() / total
    if mu02 < 1e-6:  # a flat line has no slant to measure
        return pixels.copy()
    skew = float(np.clip(mu11 / mu02, -MAX_SKEW, MAX_SKEW))
    # Output (row r, column c) samples the input at column c + skew·(r − cy): the slant undone.
    coefficients = (1, skew, -skew * cy, 0, 1, 0)
    image = Image.fromarray(ink.astype(np.float32), mode="F")
    sheared = image.transform(
        image.size, Image.Transform.AFFINE, coefficients, Image.Resampling.BILINEAR
    )
    return np.clip(np.round(np.asarray(sheared)), 0, 255).astype(np.uint8)


def upright_rows(pixels: np.ndarray) -> np.ndarray:
    """Rows of pixels (N, 784) or (N, 28, 28), 0–255, each deskewed: float32 (N, 784)."""
    images = np.clip(np.round(pixels.reshape(len(pixels), SIZE, SIZE)), 0, 255).astype(np.uint8)
    return np.stack([upright(i) for i in images]).reshape(len(pixels), -1).astype(np.float32)


def blank_rows(pixels: np.ndarray) -> np.ndarray:
    """Which rows of pixels (N, 784) hold no digit: one colour, no ink standing out. (N,) bool."""
    rows = pixels.reshape(len(pixels), -1)
    return (rows.max(axis=1) - rows.min(axis=1)) < MIN_CONTRAST


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
