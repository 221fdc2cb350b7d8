"""Writer styles MNIST's writers rarely used, drawn onto its training digits, and low-resolution
scans: two training augmentations for handwriting from other writers (docs/robustness.md).

Style edits, each on a `share` of the images of its digit, by the digit's label:
- 1: a flag from the top of the stroke down to the left (long or short), and on half of those a
  foot, the way much of Europe writes a 1;
- 7: a crossbar through the middle of the stem;
- 4: the open top closed by a line from the top of the left arm to the top of the stem;
- 9: the loop squashed into the top of the digit over a longer tail.
Lines are drawn anti-aliased at MNIST's stroke width (about 2 pixels, digits/strokes.py), where
the digit's own ink is found (above `INK`), so they follow each image's size and slant.

Low resolution: a `share` of the images shrunk to a random side (area average), optionally
quantized to 17 grey levels as old scanners stored them, and grown back to 28 pixels (bilinear or
nearest), which is how an 8–16 pixel scan looks once the image path has brought it to MNIST's
size.
Every function takes raw pixels (N, 784), float 0–255, ink high, and draws from the torch
Generator only when called. Reads and writes nothing.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

from digits.contract import SIDE

INK = 96.0  # a pixel at or above this is part of the digit when its shape is measured
LEVELS = 16  # grey steps of a quantized scan (0–16: 17 levels, 4×4 blocks of a 32×32 bitmap)

Points = torch.Tensor  # (N, 2): x (column), y (row) in pixel units


def uniform(n: int, low: float, high: float, gen: torch.Generator) -> torch.Tensor:
    """n numbers uniform in [low, high)."""
    return low + (high - low) * torch.rand(n, generator=gen)


def grid() -> tuple[torch.Tensor, torch.Tensor]:
    """Column and row index of every pixel, float: (28, 28) each."""
    rows, cols = torch.meshgrid(torch.arange(SIDE), torch.arange(SIDE), indexing="ij")
    return cols.float(), rows.float()


def segment_ink(p0: Points, p1: Points, width: torch.Tensor) -> torch.Tensor:
    """Anti-aliased line segments p0 → p1 of `width` pixels, one per image: (N, 28, 28), 0–255."""
    cols, rows = grid()
    d = (p1 - p0).view(-1, 2, 1, 1)
    rel_x, rel_y = cols - p0[:, 0].view(-1, 1, 1), rows - p0[:, 1].view(-1, 1, 1)
    length2 = (d**2).sum(1).clamp_min(1e-6)  # (N, 1, 1)
    t = ((rel_x * d[:, 0] + rel_y * d[:, 1]) / length2).clamp(0, 1)
    distance = torch.sqrt((rel_x - t * d[:, 0]) ** 2 + (rel_y - t * d[:, 1]) ** 2)
    return 255 * (width.view(-1, 1, 1) / 2 + 0.5 - distance).clamp(0, 1)


def first_true(mask: torch.Tensor) -> torch.Tensor:
    """Index of the first True along the last axis (0 where there is none): (..., K) -> (...)."""
    return mask.float().argmax(-1)


def top_point(mask: torch.Tensor, rows: int = 2) -> Points:
    """Topmost ink row and the mean column of the ink in it and the next `rows` - 1 rows."""
    cols, grid_rows = grid()
    top = first_true(mask.any(2))  # (N,)
    near = mask & (grid_rows >= top.view(-1, 1, 1)) & (grid_rows < (top + rows).view(-1, 1, 1))
    x = (near * cols).sum((1, 2)) / near.sum((1, 2)).clamp_min(1)
    return torch.stack([x, top.float()], 1)


def bottom_point(mask: torch.Tensor) -> Points:
    """Lowest ink row and the mean column of the ink in its last two rows."""
    flipped = top_point(mask.flip(1))
    return torch.stack([flipped[:, 0], SIDE - 1 - flipped[:, 1]], 1)


def row_centre(mask: torch.Tensor, row: torch.Tensor) -> torch.Tensor:
    """Mean column of the ink within one row of `row` (each image's own), else of all its ink."""
    cols, rows = grid()
    band = mask & ((rows - row.view(-1, 1, 1)).abs() <= 1)
    everywhere = (mask * cols).sum((1, 2)) / mask.sum((1, 2)).clamp_min(1)
    inside = (band * cols).sum((1, 2)) / band.sum((1, 2)).clamp_min(1)
    return torch.where(band.any(2).any(1), inside, everywhere)


def pen(n: int, gen: torch.Generator) -> torch.Tensor:
    """Stroke widths about MNIST's (digits/strokes.py: median 2 pixels)."""
    return uniform(n, 1.5, 2.8, gen)


def flag_and_foot(images: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """1s: a flag down-left from the top, and on half of them a foot."""
    n = len(images)
    mask = images >= INK
    top, bottom = top_point(mask), bottom_point(mask)
    height = (bottom[:, 1] - top[:, 1] + 1).clamp_min(4)
    reach = torch.stack([-uniform(n, 0.2, 0.5, gen), uniform(n, 0.1, 0.4, gen)], 1)
    flag_end = top + reach * height[:, None]
    ink = segment_ink(top, flag_end, pen(n, gen))
    half = uniform(n, 0.15, 0.3, gen) * height
    foot = torch.rand(n, generator=gen) < 0.5
    left = bottom - torch.stack([half, torch.zeros(n)], 1)
    right = bottom + torch.stack([half, torch.zeros(n)], 1)
    ink = torch.maximum(ink, segment_ink(left, right, pen(n, gen)) * foot.view(-1, 1, 1))
    return torch.maximum(images, ink)


def crossbar(images: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """7s: a short bar across the stem about halfway down."""
    n = len(images)
    mask = images >= INK
    top, bottom = top_point(mask), bottom_point(mask)
    height = (bottom[:, 1] - top[:, 1] + 1).clamp_min(4)
    y = top[:, 1] + uniform(n, 0.45, 0.6, gen) * height
    x = row_centre(mask, y.round())
    half = uniform(n, 0.15, 0.3, gen) * height
    tilt = uniform(n, -0.05, 0.05, gen) * height
    left = torch.stack([x - half, y + tilt], 1)
    right = torch.stack([x + half, y - tilt], 1)
    return torch.maximum(images, segment_ink(left, right, pen(n, gen)))


def closed_top(images: torch.Tensor) -> torch.Tensor:
    """4s: a line from the top of the ink left of the centre to the top of the ink right of it."""
    mask = images >= INK
    cols, _ = grid()
    centre = (mask * cols).sum((1, 2)) / mask.sum((1, 2)).clamp_min(1)
    left_side = cols < centre.view(-1, 1, 1)
    left, right = top_point(mask & left_side), top_point(mask & ~left_side)
    both = (mask & left_side).any(2).any(1) & (mask & ~left_side).any(2).any(1)
    ink = segment_ink(left, right, torch.full((len(images),), 2.0)) * both.view(-1, 1, 1)
    return torch.maximum(images, ink)


def small_loop(images: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """9s: rows remapped so the upper part (the loop) fills less height and the tail more."""
    n = len(images)
    mask = images >= INK
    top, bottom = top_point(mask)[:, 1], bottom_point(mask)[:, 1]
    height = (bottom - top + 1).clamp_min(4).view(-1, 1)
    loop = 0.45  # share of the height the loop takes in an MNIST 9
    kept = loop * uniform(n, 0.55, 0.8, gen).view(-1, 1)  # its share afterwards
    t = (torch.arange(SIDE).float() - top.view(-1, 1)) / height  # (N, 28) output rows
    source = torch.where(t < kept, t * loop / kept, loop + (t - kept) * (1 - loop) / (1 - kept))
    source = torch.where((t >= 0) & (t <= 1), source, t) * height + top.view(-1, 1)
    y = (2 * source + 1) / SIDE - 1  # grid_sample units, align_corners=False
    x = (2 * torch.arange(SIDE).float() + 1) / SIDE - 1
    sample = torch.stack(torch.broadcast_tensors(x.view(1, 1, -1), y.view(n, -1, 1)), -1)
    return F.grid_sample(images[:, None], sample, align_corners=False)[:, 0]


def writer_styles(
    x: torch.Tensor, y: torch.Tensor, share: float, gen: torch.Generator
) -> torch.Tensor:
    """The style edits of 1s, 4s, 7s and 9s, each on a `share` of its digit's images."""
    chosen = torch.rand(len(y), generator=gen) < share
    images = x.view(-1, SIDE, SIDE).clone()
    for digit, edit in (
        (1, flag_and_foot),
        (7, crossbar),
        (4, lambda picked, _: closed_top(picked)),
        (9, small_loop),
    ):
        picked = (chosen & (y == digit)).nonzero().squeeze(1)
        if len(picked):
            images[picked] = edit(images[picked], gen)
    return images.view(len(y), -1)


def low_resolution(
    x: torch.Tensor, share: float, sides: tuple[int, int], gen: torch.Generator
) -> torch.Tensor:
    """A `share` of the images shrunk to a random side in `sides`, some quantized, grown back."""
    n = len(x)
    chosen = torch.rand(n, generator=gen) < share
    side = torch.randint(sides[0], sides[1] + 1, (n,), generator=gen)
    quantized = torch.rand(n, generator=gen) < 0.5
    nearest = torch.rand(n, generator=gen) < 0.5
    images = x.view(n, 1, SIDE, SIDE).clone()
    for s in side[chosen].unique().tolist():
        for blocky in (False, True):
            picked = (chosen & (side == s) & (nearest == blocky)).nonzero().squeeze(1)
            if not len(picked):
                continue
            small = F.interpolate(images[picked], size=(s, s), mode="area")
            steps = torch.where(quantized[picked].view(-1, 1, 1, 1), LEVELS, 255)
            small = torch.round(small / 255 * steps) / steps * 255
            mode = "nearest" if blocky else "bilinear"
            options = {} if blocky else {"align_corners": False}
            images[picked] = F.interpolate(small, size=(SIDE, SIDE), mode=mode, **options)
    return images.view(n, -1).clamp(0, 255)
