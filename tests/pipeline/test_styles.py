"""Writer-style and low-resolution augmentations, and the handwriting benchmark they answer."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from pipeline.config import ParamError, parse_group
from pipeline.robustness_sets.handwriting import (
    CANVAS,
    STYLES,
    handwriting_digits,
    rare_styles,
    resolutions,
    scan,
)
from pipeline.training.loop import augment_batch
from pipeline.training.params import TrainParams
from pipeline.training.styles import (
    closed_top,
    crossbar,
    flag_and_foot,
    low_resolution,
    segment_ink,
    small_loop,
    writer_styles,
)
from tests.conftest import flat_digits


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def canvas(*lines: tuple[slice, slice]) -> torch.Tensor:
    """One 28×28 image, ink 255 on the (rows, columns) slices given: (1, 28, 28) float."""
    image = torch.zeros(1, 28, 28)
    for rows, cols in lines:
        image[0, rows, cols] = 255
    return image


STICK = canvas((slice(4, 24), slice(14, 16)))  # a 1: one upright stroke
SEVEN = canvas((slice(4, 6), slice(6, 22)), (slice(4, 24), slice(18, 20)))  # bar and stem
OPEN_FOUR = canvas(
    (slice(4, 15), slice(7, 9)),  # left arm, down
    (slice(13, 15), slice(7, 22)),  # across
    (slice(4, 24), slice(17, 19)),  # stem
)
NINE = canvas(
    (slice(4, 6), slice(9, 19)), (slice(12, 14), slice(9, 19)),  # loop: top and bottom
    (slice(4, 14), slice(9, 11)), (slice(4, 24), slice(17, 19)),  # loop's left, stem
)  # fmt: skip


def test_segment_ink_draws_a_line_of_the_width_asked_and_nothing_else():
    start, end = torch.tensor([[5.0, 10.0]]), torch.tensor([[20.0, 10.0]])
    ink = segment_ink(start, end, torch.tensor([2.0]))
    assert ink.shape == (1, 28, 28)
    assert torch.all(ink[0, 10, 5:21] == 255)  # on the line
    assert torch.all(ink[0, 9, 5:21] == 127.5) and torch.all(ink[0, 11, 5:21] == 127.5)
    assert ink[0, :8].sum() == 0 and ink[0, 13:].sum() == 0 and ink[0, :, 23:].sum() == 0


def test_a_flag_goes_down_left_from_the_top_of_a_1_and_ink_is_only_added():
    flagged = flag_and_foot(STICK, gen(0))
    assert torch.all(flagged >= STICK)
    assert flagged[0, 4:14, :13].sum() > 255 * 3  # ink left of the stroke, near the top
    assert flagged[0, :3].sum() == 0  # nothing above the digit but the line's soft edge
    feet = [flag_and_foot(STICK, gen(seed))[0, 22:25, :13].sum() > 0 for seed in range(20)]
    assert 0 < sum(feet) < 20  # some of the flagged 1s get a foot, not all


def test_a_crossbar_crosses_the_stem_of_a_7_about_halfway_down():
    crossed = crossbar(SEVEN, gen(0))
    assert torch.all(crossed >= SEVEN)
    middle = crossed[0, 11:18]
    assert middle[:, 12:17].sum() > 0 and middle[:, 21:].sum() > 0  # both sides of the stem
    assert crossed[0, 19:, :17].sum() == 0  # not near the bottom


def test_the_open_top_of_a_4_is_closed_from_arm_to_stem():
    closed = closed_top(OPEN_FOUR)
    assert OPEN_FOUR[0, 4:6, 10:16].sum() == 0
    assert torch.all(closed[0, 4:6, 10:16].amax(0) > 0)  # the gap at the top is bridged
    assert torch.equal(closed[0, 6:], OPEN_FOUR[0, 6:])


def ink_rows(image: torch.Tensor, cols: slice = slice(None)) -> torch.Tensor:
    """Rows of a (1, 28, 28) image with ink in the given columns."""
    return (image[0, :, cols] >= 96).any(1).nonzero().squeeze(1)


def test_a_9s_loop_is_squashed_into_the_top_over_a_longer_tail():
    squashed = small_loop(NINE, gen(0))
    assert ink_rows(squashed)[0] == ink_rows(NINE)[0]  # the digit keeps its height
    assert ink_rows(squashed)[-1] == ink_rows(NINE)[-1]
    loop = slice(12, 16)  # columns inside the loop, left of the stem
    assert ink_rows(squashed, loop).max() < ink_rows(NINE, loop).max() - 2  # its bottom moved up


def test_writer_styles_change_only_the_chosen_digits():
    x, y = flat_digits(200, seed=3)
    xb, yb = torch.from_numpy(x).float(), torch.from_numpy(y)
    styled = writer_styles(xb, yb, 1.0, gen(0))
    changed = (styled != xb).any(1)
    styled_digits = torch.isin(yb, torch.tensor([1, 4, 7, 9]))
    assert not changed[~styled_digits].any()
    for digit in (1, 7, 4, 9):
        assert changed[yb == digit].float().mean() > 0.8, digit
    assert torch.equal(writer_styles(xb, yb, 0.0, gen(0)), xb)
    some = (writer_styles(xb, yb, 0.5, gen(0)) != xb).any(1)[torch.isin(yb, torch.tensor([1, 7]))]
    assert 0.2 < some.float().mean() < 0.8


def coarse(x: torch.Tensor) -> torch.Tensor:
    """Images (N, 784) averaged down to 8×8."""
    return F.interpolate(x.view(-1, 1, 28, 28), size=(8, 8), mode="area")


def detail(x: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference between horizontally adjacent pixels."""
    return x.view(-1, 28, 28).diff(dim=2).abs().mean()


def test_low_resolution_keeps_the_coarse_picture_and_loses_the_detail():
    x, _ = flat_digits(64, seed=5)
    xb = torch.from_numpy(x).float()
    out = low_resolution(xb, 1.0, (8, 8), gen(0))
    assert out.shape == xb.shape and out.min() >= 0 and out.max() <= 255
    assert (coarse(out) - coarse(xb)).abs().mean() < 12  # the same digit at 8 px
    assert detail(out) < 0.8 * detail(xb)
    assert torch.equal(low_resolution(xb, 0.0, (8, 16), gen(0)), xb)


def test_augment_batch_with_the_style_params_is_seeded_and_differs_from_without():
    x, y = flat_digits(32, seed=6)
    xb, yb = torch.from_numpy(x).float(), torch.from_numpy(y)
    plain = TrainParams(augment=True)
    styled = dataclasses.replace(plain, augment_styles=1.0, augment_lowres=0.5)
    a, b = augment_batch(xb, yb, plain, gen(1)), augment_batch(xb, yb, styled, gen(1))
    assert not torch.allclose(a, b, atol=1.0)
    assert torch.equal(augment_batch(xb, yb, styled, gen(1)), b)


@pytest.mark.parametrize(
    ("key", "value"),
    [("augment_styles", 1.5), ("augment_lowres", -0.1), ("augment_lowres_sides", [16, 8]),
     ("augment_lowres_sides", [2, 8]), ("augment_lowres_sides", [8, 28])],
)  # fmt: skip
def test_bad_style_params_are_refused_by_name(key: str, value: object):
    with pytest.raises(ParamError, match=f"train.{key}"):
        parse_group(TrainParams, "train", {key: value})


def test_the_handwriting_set_has_every_style_at_every_resolution_dark_on_white():
    images, labels, styles, scans = handwriting_digits(3, seed=0)
    per_style = 3 * len(resolutions())
    assert len(images) == len(labels) == len(styles) == len(scans) == per_style * len(STYLES)
    assert [styles.count(name) for name in STYLES] == [per_style] * len(STYLES)
    assert np.array_equal(np.unique(labels), np.arange(10))
    assert all(labels[i] == STYLES[styles[i]][0] for i in range(len(labels)))
    assert set(rare_styles()) < set(STYLES) and "7 crossed" in rare_styles()
    for image in images:
        assert image.shape == (CANVAS, CANVAS) and image.dtype == np.uint8
        assert image.mean() > 150 and image.min() < 200  # mostly white paper, darker ink
    assert all(image.min() < 100 for image, s in zip(images, scans, strict=True) if s == "drawn")
    drawn, eight = images[0], images[1]  # one writer: drawn, then its 8 px scan
    assert scans[:2] == ["drawn", "8 px"] and not np.array_equal(drawn, eight)
    assert len(np.unique(scan(drawn, 8, blocky=True))) <= 17  # quantized as old scanners did
    assert len(np.unique(scan(drawn, 16, blocky=True))) > 17
    again = handwriting_digits(3, seed=0)[0]
    assert all(np.array_equal(a, b) for a, b in zip(images, again, strict=True))
    assert not np.array_equal(handwriting_digits(3, seed=1)[0][0], drawn)
