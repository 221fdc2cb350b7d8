"""digits.strokes and the deskew: widths measured, far-off strokes made MNIST-like, slant undone."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw

from digits.images import center_of_mass, to_mnist, upright, upright_rows
from digits.strokes import BAND, MNIST_WIDTH, stroke_width


def seven(size: int, width: int) -> Image.Image:
    """A '7' drawn with a pen `width` pixels wide on a size×size white page."""
    image = Image.new("L", (size, size), 255)
    s = size / 100
    points = [(20 * s, 15 * s), (80 * s, 15 * s), (40 * s, 90 * s)]
    ImageDraw.Draw(image).line(points, fill=0, width=width, joint="curve")
    return image


@pytest.mark.parametrize("width", [1, 3, 6, 10])
def test_stroke_width_of_a_bar_is_its_width(width: int) -> None:
    ink = np.zeros((60, 60))
    ink[5:55, 20 : 20 + width] = 255
    assert stroke_width(ink) == pytest.approx(width, rel=2 * width / 50 + 0.01)  # ends count too


def test_stroke_width_ignores_ink_under_half_the_peak() -> None:
    ink = np.zeros((60, 60))
    ink[5:55, 20:24] = 255
    ink[5:55, 24:30] = 100  # a faint halo
    assert stroke_width(ink) == pytest.approx(4, rel=0.1)


@pytest.mark.parametrize(
    ("case", "size", "width"),
    [("pen on a large scan", 800, 4), ("marker on a small canvas", 40, 9), ("low-res", 16, 1)],
)
def test_strokes_end_up_as_wide_as_mnists(case: str, size: int, width: int) -> None:
    out = to_mnist(seven(size, width)).astype(float)
    assert BAND[0] <= stroke_width(out) <= BAND[1], case


def test_mnist_like_strokes_are_left_alone() -> None:
    pixels = np.zeros((28, 28), np.uint8)
    pixels[4:24, 12:14] = 255  # a "1" two pixels wide: MNIST's median
    pixels[4:6, 9:14] = 255
    assert stroke_width(pixels.astype(float)) == pytest.approx(MNIST_WIDTH, rel=0.2)
    out = to_mnist(Image.fromarray(pixels))
    assert stroke_width(out.astype(float)) == pytest.approx(stroke_width(pixels), rel=0.1)


def slanted_bar(skew: float) -> np.ndarray:
    """A bar 20 tall leaning right by `skew` columns per row, centred in 28×28."""
    pixels = np.zeros((28, 28), np.uint8)
    for row in range(4, 24):
        col = round(14 + skew * (row - 13.5))
        pixels[row, col - 1 : col + 2] = 255
    return pixels


@pytest.mark.parametrize("skew", [-0.4, 0.3])
def test_upright_undoes_a_slant_and_keeps_the_centre(skew: float) -> None:
    pixels = slanted_bar(skew)
    out = upright(pixels)
    cols = [np.average(np.arange(28), weights=row) for row in out[4:24].astype(float)]
    assert np.ptp(cols) <= 1.5  # one column, give or take the rounding of the drawn bar
    assert np.ptp([np.average(np.arange(28), weights=r) for r in pixels[4:24].astype(float)]) > 5
    assert np.allclose(center_of_mass(out.astype(float)), center_of_mass(pixels.astype(float)),
                       atol=0.6)  # fmt: skip
    assert out.dtype == np.uint8 and out.shape == (28, 28)


def test_upright_is_pure_and_leaves_upright_and_blank_digits_alone() -> None:
    pixels = slanted_bar(0.0)
    before = pixels.copy()
    np.testing.assert_array_equal(upright(pixels), pixels)
    np.testing.assert_array_equal(pixels, before)  # the input is not touched
    blank = np.zeros((28, 28), np.uint8)
    np.testing.assert_array_equal(upright(blank), blank)


def test_upright_rows_deskews_each_row_of_any_numeric_type() -> None:
    rows = np.stack([slanted_bar(0.4), slanted_bar(-0.3)]).reshape(2, 784).astype(np.float64)
    out = upright_rows(rows)
    assert out.shape == (2, 784) and out.dtype == np.float32
    for row, image in zip(out, (slanted_bar(0.4), slanted_bar(-0.3)), strict=True):
        np.testing.assert_array_equal(row.reshape(28, 28), upright(image))
