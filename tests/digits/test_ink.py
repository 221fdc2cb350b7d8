"""digits.ink via the image path: modes, 16-bit, EXIF, alpha, lighting, polarity, no digit."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageOps

from digits.images import load_image, prepare, to_mnist
from digits.ink import BLANK, NOISE, WORK_SIDE, to_gray
from tests.digits.conftest import close, four


def encode(image: Image.Image, fmt: str = "PNG", **options: object) -> bytes:
    """The image's bytes in a file format."""
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


REFERENCE = to_mnist(four())


@pytest.mark.parametrize(
    ("mode", "fmt"),
    [
        ("1", "PNG"),
        ("L", "PNG"),
        ("L", "JPEG"),
        ("LA", "PNG"),
        ("P", "PNG"),
        ("P", "GIF"),
        ("RGB", "PNG"),
        ("RGB", "JPEG"),
        ("RGB", "BMP"),
        ("RGBA", "PNG"),
        ("CMYK", "JPEG"),
        ("I;16", "PNG"),
        ("I", None),  # 32-bit integers: Pillow opens none of our formats so, but may hand them
        ("F", None),
    ],
)
def test_every_mode_pillow_opens_reads_the_same_digit(mode: str, fmt: str | None) -> None:
    source = four()
    if mode == "1":
        image = source.point(lambda v: 255 * (v >= 128)).convert("1")  # 1-bit: no grey edges
    elif mode == "I;16":
        image = Image.fromarray(np.asarray(source).astype(np.uint16) * 257)
    elif mode == "I":
        image = Image.fromarray(np.asarray(source).astype(np.int32) * 257)
    else:
        image = source.convert(mode)
    loaded = load_image(encode(image, fmt)) if fmt else image
    assert close(to_mnist(loaded), REFERENCE, mean=6 if mode == "1" else 4), loaded.mode


def test_a_16_bit_scan_of_dark_ink_is_scaled_not_clipped() -> None:
    digit = np.asarray(four(), dtype=np.uint16) * 257  # 0–65535, dark ink on white
    loaded = load_image(encode(Image.fromarray(digit)))
    assert loaded.mode == "I;16"
    np.testing.assert_allclose(to_gray(loaded), np.asarray(four(), float), atol=0.01)
    assert close(to_mnist(loaded), REFERENCE, mean=0.5)


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_exif_rotated_photo_is_read_upright(orientation: int) -> None:
    # What the camera stored, and the EXIF tag that says how to turn it for display.
    stored = four().transpose({3: Image.Transpose.ROTATE_180, 6: Image.Transpose.ROTATE_90,
                               8: Image.Transpose.ROTATE_270}[orientation])  # fmt: skip
    exif = Image.Exif()
    exif[0x0112] = orientation
    loaded = load_image(encode(stored, "JPEG", exif=exif.tobytes(), quality=95))
    assert close(to_mnist(loaded), REFERENCE)
    assert not close(to_mnist(stored), REFERENCE)  # unturned, it is another picture


def test_canvas_export_with_dark_strokes_on_transparency() -> None:
    canvas = Image.new("RGBA", (120, 160), (0, 0, 0, 0))  # a drawing app's transparent canvas
    canvas.putalpha(ImageOps.invert(four()))  # black strokes, antialiased alpha
    assert close(to_mnist(load_image(encode(canvas))), REFERENCE, mean=1)


def test_clear_margins_of_a_photo_are_not_ink() -> None:
    photo = four().convert("RGBA")
    photo.paste((0, 0, 0, 0), (0, 0, 120, 12))  # a transparent band along the top, black-filled
    assert close(to_mnist(load_image(encode(photo))), REFERENCE, mean=1)


def lit(image: Image.Image, light: np.ndarray) -> Image.Image:
    """The picture under uneven light: each pixel's reflectance times the light there."""
    reflectance = np.asarray(image, float) / 255
    return Image.fromarray(np.clip(reflectance * light, 0, 255).astype(np.uint8))


def test_uneven_lighting_and_a_soft_shadow_do_not_become_ink() -> None:
    rows, cols = np.mgrid[0:160, 0:120] / 160
    gradient = 250 - 150 * cols  # light falling off across the page: 250 down to 140
    vignette = 240 - 120 * ((rows - 0.5) ** 2 + (cols - 0.4) ** 2)
    shadow = 245 - 110 / (1 + np.exp(-(cols - 0.45) * 12))  # a hand's soft shadow on the right
    for light in (gradient, vignette, shadow):
        out = to_mnist(lit(four(), light))
        assert close(out, REFERENCE, mean=8)
        assert out[:, :3].max() == 0 and out[:, -3:].max() == 0  # no paper left as ink


def test_paper_texture_is_not_ink() -> None:
    rng = np.random.default_rng(0)
    fibres = Image.fromarray(rng.normal(0, 20, (80, 60)).astype(np.float32), mode="F")
    grain = np.asarray(fibres.resize((120, 160), Image.Resampling.BILINEAR))  # blotches, not pixels
    noisy = np.clip(np.asarray(four(paper=215, ink=40), float) + grain, 0, 255).astype(np.uint8)
    out = to_mnist(Image.fromarray(noisy))
    assert close(out, REFERENCE, mean=8)


@pytest.mark.parametrize(("ink", "paper"), [(0, 255), (255, 0), (60, 180), (200, 90)])
def test_dark_on_light_and_light_on_dark_read_alike(ink: int, paper: int) -> None:
    assert close(to_mnist(four(ink=ink, paper=paper)), REFERENCE, mean=1)


def test_a_digit_filling_its_tight_crop_keeps_its_polarity() -> None:
    tight = four().crop((20, 20, 104, 144))  # strokes touch the edges; the paper still wins
    assert close(to_mnist(tight), REFERENCE, mean=6)
    assert close(to_mnist(ImageOps.invert(tight)), to_mnist(tight), mean=1)


def test_large_photos_are_reduced_before_the_work() -> None:
    photo = four((1800, 2400))
    assert max(to_gray(photo).shape) == WORK_SIDE
    assert close(to_mnist(photo), REFERENCE, mean=6)


def noise(kind: str, rng: np.random.Generator) -> Image.Image:
    """A picture of noise alone."""
    if kind == "uniform":
        return Image.fromarray(rng.integers(0, 256, (64, 64), dtype=np.uint8))
    if kind == "colour":
        return Image.fromarray(rng.integers(0, 256, (48, 80, 3), dtype=np.uint8))
    if kind == "gaussian":
        return Image.fromarray(np.clip(rng.normal(128, 20, (200, 200)), 0, 255).astype(np.uint8))
    pixels = np.full((120, 120), 235, np.uint8)  # salt and pepper on paper
    pixels[rng.random(pixels.shape) < 0.02] = 0
    return Image.fromarray(pixels)


@pytest.mark.parametrize("kind", ["uniform", "colour", "gaussian", "salt and pepper"])
def test_noise_only_has_no_digit(kind: str) -> None:
    prepared = prepare(noise(kind, np.random.default_rng(1)))
    assert prepared.reason == NOISE
    assert not prepared.pixels.any()


@pytest.mark.parametrize(
    ("image", "words"),
    [
        (Image.new("L", (64, 64), 255), BLANK),
        (Image.new("L", (64, 64), 0), BLANK),
        (Image.new("RGB", (300, 200), (128, 128, 128)), BLANK),
        (Image.new("RGBA", (50, 50), (0, 0, 0, 0)), BLANK),
        (Image.new("L", (1, 1), 0), "too small: 1×1 pixels"),
        (Image.new("L", (7, 40), 0), "too small: 7×40 pixels"),
    ],
)
def test_blank_uniform_and_tiny_images_have_no_digit(image: Image.Image, words: str) -> None:
    prepared = prepare(load_image(encode(image)))
    assert prepared.reason is not None and prepared.reason.startswith(words)
    assert not prepared.pixels.any()


def test_too_little_ink_is_no_digit() -> None:
    page = np.full((400, 300), 240, np.uint8)
    page[200:203, 150:153] = 20  # a dot of 3×3 on a page
    prepared = prepare(Image.fromarray(page))
    assert prepared.reason == "too little ink: a mark 3 pixels long in a 300×400 image"


def test_impulse_noise_over_a_digit_is_filtered_out() -> None:
    pixels = np.asarray(four(), np.uint8).copy()
    rng = np.random.default_rng(2)
    hits = rng.random(pixels.shape)
    pixels[hits < 0.03], pixels[hits > 0.97] = 0, 255
    prepared = prepare(Image.fromarray(pixels))
    assert prepared.reason is None
    assert close(prepared.pixels, REFERENCE, mean=8)


def test_a_digit_has_no_reason() -> None:
    prepared = prepare(four())
    assert prepared.reason is None
    np.testing.assert_array_equal(prepared.pixels, REFERENCE)
