"""digits.images: safe decoding; to_mnist against the MNIST recipe (box, centroid, inversion)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageOps

from digits.images import MAX_PIXELS, ImageError, load_image, pixel_problem, to_mnist


def encode(image: Image.Image, fmt: str = "PNG") -> bytes:
    """The image's bytes in a file format."""
    buffer = io.BytesIO()
    image.save(buffer, fmt)
    return buffer.getvalue()


def seven(size: tuple[int, int] = (120, 160), ink: int = 0, paper: int = 255) -> Image.Image:
    """A thick '7' stroke off-centre on plain paper."""
    image = Image.new("L", size, paper)
    draw = ImageDraw.Draw(image)
    draw.line([(20, 30), (90, 30), (45, 140)], fill=ink, width=12)
    return image


def centroid(pixels: np.ndarray) -> tuple[float, float]:
    """(row, column) centre of mass of a 2-D array."""
    rows, cols = np.indices(pixels.shape)
    return (rows * pixels).sum() / pixels.sum(), (cols * pixels).sum() / pixels.sum()


def test_load_image_decodes_png_and_jpeg() -> None:
    image = seven()
    for fmt in ("PNG", "JPEG"):
        loaded = load_image(encode(image, fmt))
        assert loaded.size == image.size
        assert np.abs(np.asarray(loaded.convert("L"), float) - np.asarray(image)).mean() < 3


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty"),
        (b"%PDF-1.4 not an image at all", "not an image"),
        (encode(seven())[:200], "truncated"),
        (encode(Image.new("L", (4097, 4097))), "too large"),
    ],
)
def test_load_image_refuses_bad_bytes_with_one_line(data: bytes, message: str) -> None:
    with pytest.raises(ImageError, match=message) as err:
        load_image(data)
    assert "\n" not in str(err.value)


def test_pixel_limit_is_below_pillows_own_bomb_error() -> None:
    assert MAX_PIXELS < 2 * Image.MAX_IMAGE_PIXELS  # ours answers before Pillow's error would


def test_to_mnist_follows_the_recipe() -> None:
    out = to_mnist(seven())
    assert out.shape == (28, 28) and out.dtype == np.uint8
    rows, cols = np.nonzero(out)
    height, width = rows.max() - rows.min() + 1, cols.max() - cols.min() + 1
    assert max(height, width) in (20, 21) and min(height, width) < 20  # fits 20×20, keeps aspect
    assert np.all(np.abs(np.array(centroid(out.astype(float))) - 14) <= 1)
    assert out[0].max() == 0 and out[:, 0].max() == 0  # black background
    assert out.max() == 255  # strokes at full ink


def test_to_mnist_inverts_dark_on_light_only() -> None:
    dark_on_light = to_mnist(seven(ink=0, paper=255))
    light_on_dark = to_mnist(ImageOps.invert(seven(ink=0, paper=255)))
    np.testing.assert_array_equal(dark_on_light, light_on_dark)


def test_to_mnist_keeps_aspect_ratio_of_a_tall_bar() -> None:
    image = Image.new("L", (100, 100), 0)
    ImageDraw.Draw(image).rectangle([40, 10, 49, 89], fill=255)  # 10 wide, 80 tall
    rows, cols = np.nonzero(to_mnist(image) > 64)
    assert rows.max() - rows.min() + 1 == 20
    assert 2 <= cols.max() - cols.min() + 1 <= 4  # 10/80 of 20 = 2.5


def test_to_mnist_of_colour_and_transparent_drawings_matches_grey() -> None:
    grey = to_mnist(seven())
    rgb = to_mnist(seven().convert("RGB"))
    strokes = Image.new("RGBA", (120, 160), (0, 0, 0, 0))  # a canvas: strokes on transparency
    strokes.putalpha(ImageOps.invert(seven()))
    assert np.abs(rgb.astype(int) - grey).max() <= 1
    assert np.abs(to_mnist(strokes).astype(int) - grey).max() <= 1


def test_to_mnist_of_blank_images_is_zeros() -> None:
    for colour in (0, 255, 128):
        assert not to_mnist(Image.new("L", (50, 50), colour)).any()
    faint = np.full((50, 50), 200, np.uint8)
    faint[20:30, 20:30] = 195  # below the contrast threshold: noise, not a digit
    assert not to_mnist(Image.fromarray(faint)).any()


def test_mnist_digit_is_nearly_a_fixed_point() -> None:
    digit = np.zeros((28, 28), np.uint8)
    digit[4:24, 11:17] = 255  # a "1": 20 tall, centred like MNIST
    out = to_mnist(Image.fromarray(digit)).astype(int)
    # Its centroid is (13.5, 13.5): the recipe may move it half a pixel either way, no more.
    shifts = [np.roll(digit, (dy, dx), axis=(0, 1)) for dy in (0, 1) for dx in (0, 1)]
    assert min(np.abs(out - shifted).mean() for shifted in shifts) < 3


def test_pixel_problem_accepts_good_pixels_of_any_numeric_type() -> None:
    assert pixel_problem(np.full((3, 784), 255, np.uint8)) is None
    assert pixel_problem(np.array([[0.0, 127.5, 255.0]])) is None
    assert pixel_problem(np.zeros((0, 784), np.float32)) is None


@pytest.mark.parametrize(
    ("value", "shown"), [(np.nan, "nan"), (np.inf, "inf"), (-np.inf, "-inf"), (-0.5, "-0.5"),
                         (256, "256")]
)  # fmt: skip
def test_pixel_problem_names_the_first_bad_row_and_value(value: float, shown: str) -> None:
    X = np.zeros((10, 28, 28))
    X[6, 3, 4] = value
    X[8, 0, 0] = -1  # a later bad row is not the one named
    message = pixel_problem(X, first_row=100)
    assert message is not None and message.startswith(f"row 106 has pixel value {shown} ")
    assert "finite" in message and "0–255" in message
