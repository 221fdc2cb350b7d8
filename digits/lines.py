"""Straight lines across a picture: ruled paper, a scratch, a fold, the rules of a form's box.

A line running from one edge of the picture to the opposite edge is no part of a digit (a digit
sits inside its picture), but to the ink threshold it is ink, and the crop around the ink then
takes the whole picture: the digit shrinks and a bar runs through it. Lines are found on a
coarse copy of the ink (at most COARSE pixels a side, max-pooled so thin lines survive) by the
share of ink along every straight path between two opposite edges, fitted again at full size,
erased, and where a stroke crosses one the stroke is bridged across the gap from both sides.
Lines go only when what stays lies inside their length with room at both ends: a tightly
cropped 1 or 7, whose own stroke runs edge to edge, keeps it. Pure numpy; reads and writes no
files.
"""

from __future__ import annotations

import math

import numpy as np

COARSE = 64  # lines are searched for on a copy of at most this many pixels a side
LEVEL = 96  # ink at least this bright is part of a line (lines drawn in ink are near 255)
COVERAGE = 0.9  # share of a path that must be ink, both end pixels included, to be a line
MAX_LINES = 4  # a form's box has four rules; more lines than that is a drawing, not a page
END_ROOM = 0.05  # what stays must keep this share of the line's length clear at both ends
WIDE, MIN_WIDE = 0.08, 4  # a line is at most this share of the picture (or pixels) wide


def pooled(mask: np.ndarray) -> np.ndarray:
    """(H, W) bool -> at most COARSE a side: a coarse pixel is ink when any of its block is."""
    h, w = mask.shape
    f = math.ceil(max(h, w) / COARSE)
    if f == 1:
        return mask
    padded = np.zeros((math.ceil(h / f) * f, math.ceil(w / f) * f), bool)
    padded[:h, :w] = mask
    return padded.reshape(padded.shape[0] // f, f, padded.shape[1] // f, f).any(axis=(1, 3))


def path_columns(starts: np.ndarray, stops: np.ndarray, h: int) -> np.ndarray:
    """(A, B, H) column per row of every straight path from a top column to a bottom one."""
    t = np.arange(h) / max(h - 1, 1)
    a, b = starts[:, None, None], stops[None, :, None]
    return np.rint(a + (b - a) * t).astype(np.intp)


def top_to_bottom(mask: np.ndarray) -> list[tuple[int, int]]:
    """Coarse top-to-bottom lines (top column, bottom column) in a coarse mask, best first."""
    h, w = mask.shape
    if h < 3:
        return []
    mask = mask.copy()
    rows = np.arange(h)
    found: list[tuple[int, int]] = []
    while len(found) < MAX_LINES:
        wide = mask.copy()  # a path one pixel off a drawn line still follows it
        wide[:, 1:] |= mask[:, :-1]
        wide[:, :-1] |= mask[:, 1:]
        # A line has ink at both ends: only paths between inked edge pixels are counted.
        starts, stops = np.flatnonzero(wide[0]), np.flatnonzero(wide[-1])
        if starts.size == 0 or stops.size == 0:
            break
        columns = path_columns(starts, stops, h)
        coverage = wide[rows, columns].mean(axis=-1)  # (A, B)
        # Of the paths a thick line holds, the one along its middle covers the most ink exactly.
        score = np.where(coverage >= COVERAGE, coverage + mask[rows, columns].mean(axis=-1), 0)
        i, j = np.unravel_index(int(np.argmax(score)), score.shape)
        if score[i, j] == 0:
            break
        found.append((int(starts[i]), int(stops[j])))
        for dx in (-1, 0, 1):  # taken: the next search looks for another line
            mask[rows, np.clip(columns[i, j] + dx, 0, w - 1)] = False
    return found


def row_runs(ink: np.ndarray, centres: np.ndarray, reach: int) -> list[tuple[int, int, int]]:
    """Per row, the run of line-bright ink nearest the predicted centre: (row, start, stop).

    Runs are followed at most 2·reach past the centre: longer ones are strokes or filled areas,
    never a line, and following them across a large picture would cost a pass per pixel.
    """
    h, w = ink.shape
    runs = []
    for row in range(h):
        c = int(round(float(centres[row])))
        lo, hi = max(c - 3 * reach, 0), min(c + 3 * reach + 1, w)
        bright = ink[row, lo:hi] >= LEVEL
        first = max(c - reach - lo, 0)  # the search window inside the followed span
        near = first + np.flatnonzero(bright[first : c + reach + 1 - lo])
        if near.size == 0:
            continue
        k = int(near[np.argmin(np.abs(near - (c - lo)))])
        dark_left = np.flatnonzero(~bright[:k])
        dark_right = np.flatnonzero(~bright[k:])
        start = lo + (int(dark_left[-1]) + 1 if dark_left.size else 0)
        stop = lo + (k + int(dark_right[0]) - 1 if dark_right.size else len(bright) - 1)
        runs.append((row, start, stop))
    return runs


def fitted_band(ink: np.ndarray, top: int, bottom: int, factor: int) -> np.ndarray | None:
    """A coarse line fitted on the full-size ink: (H, W) bool, the pixels the line covers."""
    h, w = ink.shape
    coarse_h = math.ceil(h / factor)
    coarse_rows = np.clip((np.arange(h) + 0.5) / factor - 0.5, 0, coarse_h - 1)
    centres = (top + (bottom - top) * coarse_rows / max(coarse_h - 1, 1) + 0.5) * factor - 0.5
    runs = np.array(row_runs(ink, centres, 2 * factor + 1), dtype=np.float64).reshape(-1, 3)
    if len(runs) < max(2, COVERAGE * h - 1):
        return None
    lengths = runs[:, 2] - runs[:, 1] + 1
    width = float(np.median(lengths))
    if width > max(MIN_WIDE, WIDE * w):  # a filled area or a broad band: no line to erase
        return None
    straight = lengths <= 1.5 * width + 1  # longer runs are strokes crossing the line
    if straight.sum() < 2:
        return None
    slope, offset = np.polyfit(runs[straight, 0], (runs[straight, 1] + runs[straight, 2]) / 2, 1)
    middle = (offset + slope * np.arange(h))[:, None]
    columns = np.arange(w)[None, :]
    half = width / 2 + 0.5  # half a pixel more: a staircase line is off the fit by up to that
    return (columns >= np.ceil(middle - half)) & (columns <= np.floor(middle + half))


def shifted(values: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """values[y + dy, x + dx] at (y, x); zero beyond the picture's edge."""
    h, w = values.shape
    out = np.zeros_like(values)
    if abs(dy) >= h or abs(dx) >= w:
        return out
    out[max(-dy, 0) : h - max(dy, 0), max(-dx, 0) : w - max(dx, 0)] = values[
        max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)
    ]
    return out


def inpainted(ink: np.ndarray, band: np.ndarray, line: np.ndarray, reach: int) -> np.ndarray:
    """Fill for one line's pixels (`line`, inside the `band` of all lines): a stroke that reaches
    the band on both sides of the pixel within `reach`, along any of four directions, carried
    across; zero elsewhere."""
    outside = np.where(band, np.nan, ink)
    fill = np.zeros_like(ink)
    for dy, dx in ((0, 1), (1, 0), (1, 1), (1, -1)):
        ends = []
        for sign in (1, -1):
            end = np.full(ink.shape, np.nan)  # the first pixel off the band along this way
            for step in range(1, reach + 1):
                ahead = shifted(outside, sign * step * dy, sign * step * dx)
                end = np.where(np.isnan(end), ahead, end)
            ends.append(np.nan_to_num(end, nan=0.0))
        across = np.minimum(*ends)
        fill = np.maximum(fill, np.where(across >= LEVEL, across, 0.0))
    return np.where(line, fill, 0.0)


def room_at_both_ends(rest: np.ndarray) -> bool:
    """Whether the ink left (H, W) keeps END_ROOM of the height clear above and below it."""
    rows = np.flatnonzero((rest >= LEVEL).any(axis=1))
    if rows.size == 0:
        return False
    room = max(1, round(END_ROOM * rest.shape[0]))
    return bool(rows[0] >= room and rows[-1] < rest.shape[0] - room)


def without_lines(ink: np.ndarray) -> np.ndarray:
    """Float ink (H, W) on zero -> the same without lines running edge to edge across it."""
    factor = math.ceil(max(ink.shape) / COARSE)
    mask = pooled(ink >= LEVEL)
    lines: list[tuple[bool, np.ndarray]] = []  # (runs left to right, its pixels top to bottom)
    for across, coarse, full in ((False, mask, ink), (True, mask.T, ink.T)):
        for top, bottom in top_to_bottom(coarse):
            line = fitted_band(full, top, bottom, factor)
            if line is not None:
                lines.append((across, line))
    if not lines:
        return ink
    band = np.zeros(ink.shape, bool)
    for across, line in lines:
        band |= line.T if across else line
    # The lines' anti-aliased edges: faint pixels beside them would still span the picture.
    beside = shifted(band, 0, 1) | shifted(band, 0, -1) | shifted(band, 1, 0) | shifted(band, -1, 0)
    rest = np.where(band | (beside & (ink < LEVEL)), 0.0, ink)
    # Every line must have room at both of its ends, judged on what all of them leave. Bridging
    # only fills between ink already there, so it is judged before the bridging is paid for.
    if not all(room_at_both_ends(rest.T if across else rest) for across, _ in lines):
        return ink
    for across, line in lines:
        # Farther than twice its width along a row, a walk follows the line, not crosses it.
        reach = 2 * int(line.sum(axis=1).max()) + 1
        rest = np.maximum(rest, inpainted(ink, band, line.T if across else line, reach))
    return rest
