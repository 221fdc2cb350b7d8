"""digits.lines: lines running edge to edge (ruled paper, scratches, a form's box) leave the
digit, a digit's own strokes stay, and the image path reads a digit on ruled paper as without."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw

from digits.images import to_mnist
from digits.lines import LEVEL, without_lines
from tests.digits.conftest import close, four


def ink_of(image: Image.Image) -> np.ndarray:
    """White-on-black float ink of a dark-on-light picture, as digits.ink hands it over."""
    return 255.0 - np.asarray(image, dtype=np.float32)


def ruled(image: Image.Image, lines: list[tuple[tuple[int, int], tuple[int, int]]], width: int):
    """A copy of the picture with dark lines drawn over it."""
    out = image.copy()
    draw = ImageDraw.Draw(out)
    for ends in lines:
        draw.line(ends, fill=0, width=width)
    return out


def test_a_picture_without_lines_comes_back_as_it_was() -> None:
    ink = ink_of(four())
    assert without_lines(ink) is ink


@pytest.mark.parametrize(
    "ends",
    [
        ((0, 80), (119, 80)),  # ruled paper: straight across, through the digit's bar
        ((0, 20), (119, 140)),  # a scratch at a slant
        ((30, 0), (70, 159)),  # down the page, through the digit
    ],
)
def test_a_line_across_the_picture_goes_and_the_digit_stays(
    ends: tuple[tuple[int, int], tuple[int, int]],
) -> None:
    clean, lined = ink_of(four()), ink_of(ruled(four(), [ends], width=2))
    out = without_lines(lined)
    line_only = (lined >= LEVEL) & (clean < LEVEL)
    # The line's pixels away from the digit are gone; the digit's pixels are (nearly) all kept.
    assert (out[line_only] >= LEVEL).mean() < 0.1
    assert (out[clean >= LEVEL] >= LEVEL).mean() > 0.95


@pytest.mark.parametrize("width", [1, 3])
def test_a_digit_on_ruled_paper_reads_as_without_the_lines(width: int) -> None:
    rules = [((0, y), (119, y + 6)) for y in (30, 75, 120)]
    assert close(to_mnist(ruled(four(), rules, width)), to_mnist(four()), mean=8.0)


def test_a_form_box_around_the_digit_goes() -> None:
    box = [((0, 2), (119, 2)), ((0, 157), (119, 157)), ((2, 0), (2, 159)), ((117, 0), (117, 159))]
    assert close(to_mnist(ruled(four(), box, width=3)), to_mnist(four()), mean=8.0)


def test_a_tightly_cropped_one_keeps_its_stroke() -> None:
    one = Image.new("L", (40, 120), 255)
    ImageDraw.Draw(one).line([(20, 0), (20, 119)], fill=0, width=6)
    ink = ink_of(one)
    assert without_lines(ink) is ink
    assert to_mnist(one).sum() > 0


def test_a_tightly_cropped_seven_keeps_its_slant() -> None:
    seven = Image.new("L", (80, 120), 255)
    draw = ImageDraw.Draw(seven)
    draw.line([(0, 3), (79, 3)], fill=0, width=7)  # the bar along the top edge
    draw.line([(77, 0), (10, 119)], fill=0, width=7)  # the slant from corner to bottom edge
    ink = ink_of(seven)
    assert without_lines(ink) is ink


def test_a_stroke_that_stops_short_of_an_edge_is_no_line() -> None:
    picture = four()
    ImageDraw.Draw(picture).line([(0, 80), (100, 80)], fill=0, width=2)  # to 100 of 119
    ink = ink_of(picture)
    assert without_lines(ink) is ink


def test_large_photos_lose_their_lines_too() -> None:
    page = four((480, 640))
    lined = ink_of(ruled(page, [((0, 300), (479, 310)), ((0, 500), (479, 505))], width=4))
    out = without_lines(lined)
    assert (out[:, :40] >= LEVEL).sum() == 0  # the margin beside the digit: only lines were there
    assert (out >= LEVEL).sum() > 0.9 * (ink_of(page) >= LEVEL).sum()


def test_a_broad_band_across_the_picture_is_no_line() -> None:
    # A bar a quarter of the picture wide is a shape (a shadow, a fold, the page's edge), not a
    # ruled line: erasing it would take whatever it covers, so it stays.
    picture = four()
    ImageDraw.Draw(picture).rectangle([(0, 0), (29, 159)], fill=0)  # edge to edge, 30 px wide
    ink = ink_of(picture)
    assert without_lines(ink) is ink
