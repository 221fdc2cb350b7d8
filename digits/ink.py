"""Ink from any picture: a Pillow image of any mode -> float ink on a black field, or why none.

What real photos, scans and canvas exports need before MNIST's recipe (digits/images.py): every
mode Pillow opens (16-bit, palette, LA/RGBA, CMYK, EXIF-rotated) as luminance without losing ink;
strokes on a transparent canvas; which side is ink (dark on light paper or light on dark); a
smooth background (uneven lighting, soft shadows) fitted and removed; a noise threshold (paper
texture, sensor and JPEG noise) and lone specks dropped, leaving anti-aliased grey strokes;
lines running edge to edge across the picture taken away (digits/lines.py).
A picture with no digit in it (blank, uniform, noise only, too little ink) gives a reason
instead of ink. Reads and writes no files.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageFilter, ImageOps

from digits.lines import without_lines

WORK_SIDE = 512  # larger pictures are area-averaged down first: a digit needs far fewer pixels
MIN_SIDE = 8  # a picture narrower than this cannot hold a readable digit
MIN_CONTRAST = 16  # ink brighter than the paper by less than this is no ink at all
NOISE_SIGMAS = 3.0  # ink must stand this many noise deviations above the paper
MIN_THRESHOLD = 4.0  # on noiseless paper: levels above the background that still count as paper
STROKE_PERCENTILE = 95  # the strokes' level: robust to a few pixels brighter than the rest
SPECKLED = 0.05  # share of ink in specks past which impulse noise needs a median filter (MNIST: 0)
DUST = 0.02  # runs of ink rows or columns, apart from the rest, holding less than this share
MIN_FILL = 0.005  # strokes cover at least this share of their box (a pen line on a page: ~2 %)
MIN_MARK = 0.04  # a mark shorter than this share of the picture's longer side is not a digit
SURFACE_FROM = 48  # pictures at least this large a side get a curved lighting surface
CELLS = 32  # the background is fitted to a grid of at most CELLS × CELLS block medians
SIXTEEN_BIT = 65535 / 255

BLANK = "blank: the image is one colour (no ink stands out from the paper)"
NOISE = "noise only: scattered specks, no strokes"


def to_gray(image: Image.Image) -> np.ndarray:
    """Float (H, W) luminance 0–255 of any mode, upright, at most WORK_SIDE a side."""
    image = ImageOps.exif_transpose(image)  # phone photos: turned as the camera was held
    if image.mode.startswith("I") or image.mode == "F":
        return reduced(wide_gray(image))
    if image.mode not in ("L", "LA", "RGB", "RGBA"):
        image = image.convert("RGBA")  # palette (with its transparency), 1-bit, CMYK, ...
    image = shrunk(image)
    if image.mode == "L":  # the common case (MNIST-like PNGs): no conversion needed
        return np.asarray(image, dtype=np.float32)
    return composite(np.asarray(image.convert("RGBA"), dtype=np.float32))


def wide_gray(image: Image.Image) -> np.ndarray:
    """16- and 32-bit integer or float pixels scaled to 0–255 instead of clipped."""
    values = np.asarray(image, dtype=np.float32)
    if image.mode.startswith("I;16") or values.max() > 255:
        values = values / SIXTEEN_BIT  # a 16-bit scan: 0–65535 holds the same picture
    return np.clip(values, 0, 255)


def shrunk(image: Image.Image) -> Image.Image:
    """The image area-averaged to at most WORK_SIDE a side (thin strokes stay, as grey)."""
    scale = WORK_SIDE / max(image.size)
    if scale >= 1:
        return image
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image.resize(size, Image.Resampling.BOX)


def reduced(gray: np.ndarray) -> np.ndarray:
    """A float (H, W) array area-averaged to at most WORK_SIDE a side."""
    return np.asarray(shrunk(Image.fromarray(gray.astype(np.float32), mode="F")))


def composite(rgba: np.ndarray) -> np.ndarray:
    """(H, W, 4) -> (H, W) luminance; transparent pixels filled so the strokes stand out."""
    gray = rgba[..., :3] @ np.float32([0.299, 0.587, 0.114])  # ITU-R 601-2, as Pillow's "L"
    alpha = rgba[..., 3] / 255
    if alpha.min() == 1 or alpha.max() == 0:
        return gray
    if alpha.mean() < 0.5:
        # A canvas export: strokes on a transparent field. Give them a contrasting one.
        stroke = np.average(gray, weights=alpha)
        field = 255.0 if stroke < 128 else 0.0
    else:
        # A picture with clear margins: fill them with its own paper, not with ink.
        field = float(np.median(gray[alpha >= 0.5]))
    return gray * alpha + field * (1 - alpha)


def window_sum(values: np.ndarray, edge: bool) -> np.ndarray:
    """Sum over each pixel's 3×3 window, edges repeated or zero: (H, W) -> (H, W) float32."""
    h, w = values.shape
    padded = np.zeros((h + 2, w + 2), np.float32)  # np.pad costs more than the sums on digits
    padded[1:-1, 1:-1] = values
    if edge:
        padded[0, 1:-1], padded[-1, 1:-1] = values[0], values[-1]
        padded[:, 0], padded[:, -1] = padded[:, 1], padded[:, -2]
    rows = padded[:-2] + padded[1:-1] + padded[2:]  # (H, W + 2)
    return rows[:, :-2] + rows[:, 1:-1] + rows[:, 2:]


def box_mean(values: np.ndarray) -> np.ndarray:
    """3×3 mean with edges repeated: (H, W) -> (H, W)."""
    return window_sum(values, edge=True) / 9


def neighbours(mask: np.ndarray) -> np.ndarray:
    """How many of each pixel's 8 neighbours are set: (H, W) bool -> (H, W) float32."""
    return window_sum(mask, edge=False) - mask


def ink_is_dark(gray: np.ndarray, smooth: np.ndarray) -> bool:
    """Whether the ink is darker than the paper: the extreme farther from the border's level."""
    border = np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])
    paper = middle(border)
    # Extremes of the 3×3-averaged picture: lone noisy pixels must not decide it.
    return paper - float(smooth.min()) > float(smooth.max()) - paper


def middle(values: np.ndarray) -> float:
    """The median (the upper one of an even count): a partition, cheaper than np.median."""
    k = len(values) // 2
    return float(np.partition(values, k)[k])


def block_medians(gray: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows, columns (pixel coordinates of block centres) and medians of a grid of blocks."""
    h, w = gray.shape
    by, bx = max(1, h // CELLS), max(1, w // CELLS)
    ny, nx = h // by, w // bx
    blocks = gray[: ny * by, : nx * bx].reshape(ny, by, nx, bx)
    medians = blocks[:, 0, :, 0] if by == bx == 1 else np.median(blocks, axis=(1, 3))  # (ny, nx)
    return (np.arange(ny) + 0.5) * by - 0.5, (np.arange(nx) + 0.5) * bx - 0.5, medians


def quadratic_terms(u: np.ndarray, v: np.ndarray) -> list[np.ndarray]:
    """1, u, v, u², uv, v² for row coordinates u (column vector) and column coordinates v (row)."""
    return [np.ones_like(u * v), u + 0 * v, v + 0 * u, u * u + 0 * v, u * v, v * v + 0 * u]


def fit_background(gray: np.ndarray) -> np.ndarray:
    """The paper's level at each pixel (ink bright): a robust fit that leaves the ink out."""
    h, w = gray.shape
    ys, xs, values = block_medians(gray)
    b = values.ravel()
    kept = b <= middle(b)  # start from the darker half: the paper, as ink is the minority
    paper = b[kept]
    if paper.min() == paper.max():  # flat, noiseless paper (renders, canvases, MNIST): no fit
        return np.full((h, w), paper[0], np.float64)
    # Smooth lighting in coordinates scaled to -1…1: a plane on small pictures (where a curved
    # surface could bend into a digit that fills them), a quadratic surface on larger ones.
    k = 3 if min(h, w) < SURFACE_FROM else 6
    terms = quadratic_terms(ys[:, None] / h * 2 - 1, xs[None, :] / w * 2 - 1)[:k]
    at = quadratic_terms(np.arange(h)[:, None] / h * 2 - 1, np.arange(w)[None, :] / w * 2 - 1)[:k]
    A = np.stack([t.ravel() for t in terms], axis=1)  # (cells, k)
    for _ in range(6):  # refit on the cells that look like paper, as ink is found
        Ak = A[kept]
        coef = np.linalg.solve(Ak.T @ Ak + 1e-9 * np.eye(len(A[0])), Ak.T @ b[kept])  # (k,)
        residual = b - A @ coef
        now = residual <= max(NOISE_SIGMAS * noise_level(residual[kept]), MIN_THRESHOLD)
        if now.sum() < len(coef) or (now == kept).all():
            break
        kept = now
    return sum(c * t for c, t in zip(coef, at, strict=True))


def noise_level(residual: np.ndarray) -> float:
    """The paper's noise deviation, from the pixels below the background (ink is only above)."""
    below = residual[residual < 0]
    # Paper noise is symmetric about the background: below it, its mean is σ·√(2/π).
    return -1.2533 * float(below.mean()) if below.size else 0.0


def stretch(residual: np.ndarray) -> np.ndarray | None:
    """Residual above the background -> ink 0–255, or None when nothing stands out."""
    threshold = max(NOISE_SIGMAS * noise_level(residual), MIN_THRESHOLD)
    above = residual[residual > threshold]
    if above.size == 0:
        return None
    k = (above.size - 1) * STROKE_PERCENTILE // 100
    stroke = float(np.partition(above, k)[k])
    if stroke < MIN_CONTRAST - 1e-6:  # the fitted background carries rounding error
        return None
    span = max(stroke - threshold, 1.0)
    return np.clip((residual - threshold) * (255 / span), 0, 255)


def specks(marked: np.ndarray) -> np.ndarray:
    """Ink pixels alone or in pairs (no stroke is that small): (H, W) bool -> (H, W) bool."""
    count = neighbours(marked)
    lone = marked & (count == 0)
    single = marked & (count == 1)
    return lone | (single & (neighbours(single) == 1))  # a pair: each the other's only one


def island_span(profile: np.ndarray) -> slice:
    """Rows (or columns) from the first to the last run of ink holding at least DUST of it."""
    on = np.concatenate([[0], (profile > 0).astype(np.int8), [0]])
    edges = np.flatnonzero(np.diff(on))  # alternating starts and stops of the runs
    starts, stops = edges[0::2], edges[1::2]
    mass = np.add.reduceat(profile, starts) if starts.size else np.zeros(0)
    big = np.flatnonzero(mass >= DUST * profile.sum())
    return slice(starts[big[0]], stops[big[-1]]) if big.size else slice(0, 0)


def without_dust(ink: np.ndarray, speck: np.ndarray) -> np.ndarray:
    """Ink without its specks and far-off islands of dust (rows or columns apart from the rest)."""
    ink = np.where(speck, 0.0, ink)
    rows, cols = island_span(ink.sum(axis=1)), island_span(ink.sum(axis=0))
    kept = np.zeros_like(ink)
    kept[rows, cols] = ink[rows, cols]
    return kept


def bright_ink(gray: np.ndarray) -> np.ndarray | None:
    """Oriented (ink bright) luminance -> ink 0–255 on zero, without dust; None: no ink."""
    ink = stretch(gray - fit_background(gray))
    if ink is None:
        return None
    marked = ink > 0
    speck = specks(marked)
    if speck.sum() > SPECKLED * marked.sum():  # impulse noise: a median filter's job
        filtered = Image.fromarray(gray.astype(np.float32), mode="F")
        gray = np.asarray(filtered.filter(ImageFilter.MedianFilter(3)))
        ink = stretch(gray - fit_background(gray))
        if ink is None:
            return None
        speck = specks(ink > 0)
    return without_dust(ink, speck)


def to_ink(gray: np.ndarray) -> tuple[np.ndarray | None, str | None]:
    """Luminance (H, W) -> (ink 0–255 on a zero field, None) or (None, why there is no digit)."""
    h, w = gray.shape
    if min(h, w) < MIN_SIDE:
        return None, f"too small: {w}×{h} pixels cannot hold a digit (at least {MIN_SIDE} a side)"
    smooth = box_mean(gray)
    if float(smooth.max() - smooth.min()) < MIN_CONTRAST:
        return None, BLANK
    ink = bright_ink(255 - gray if ink_is_dark(gray, smooth) else gray)
    if ink is None or not ink.any():
        return None, NOISE
    ink = without_lines(ink)
    rows, cols = np.nonzero(ink)
    height, width = rows.max() - rows.min() + 1, cols.max() - cols.min() + 1
    if rows.size < MIN_FILL * height * width:  # a few clumps spread far apart: noise
        return None, NOISE
    longest = max(height, width)
    if longest < max(MIN_MARK * max(h, w), MIN_SIDE / 2):
        return None, f"too little ink: a mark {longest} pixels long in a {w}×{h} image"
    return ink, None
