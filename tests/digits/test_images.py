"""digits.images: safe decoding; to_mnist against the MNIST recipe (box, centroid, inversion).

WebP files are real ones from Pillow's encoder; the broken ones are those files cut short or with
their header's fields rewritten, as RFC 9649 lays them out.
"""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageOps

from digits.images import (
    INK,
    MAX_PIXELS,
    MIN_CONTRAST,
    ImageError,
    image_pixels,
    load_image,
    pixel_problem,
    to_gray,
    to_mnist,
)
from tests.digits.conftest import close, four


def encode(image: Image.Image, fmt: str = "PNG", **options: object) -> bytes:
    """The image's bytes in a file format (Pillow's save options, e.g. lossless for WebP)."""
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
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


def png_chunk(kind: bytes, body: bytes) -> bytes:
    """One PNG chunk: length, type, body, CRC."""
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_header(width: int, height: int) -> bytes:
    """A PNG that declares width×height 1-bit pixels but holds almost no data (a bomb's header)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    idat = zlib.compress(b"\0" * 64)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", idat)


@pytest.mark.parametrize("side", [10_000, 20_000])  # Pillow warns above 89 Mpx, refuses above 179
def test_load_image_refuses_decompression_bombs_from_the_header(side: int) -> None:
    with pytest.raises(ImageError, match=r"^image too large \(decompression bomb\)"):
        load_image(png_header(side, side))


def test_load_image_names_the_problem_for_users() -> None:
    with pytest.raises(ImageError) as empty:
        load_image(b"")
    with pytest.raises(ImageError) as unknown:
        load_image(b"GIF? no, just text")
    assert str(empty.value) == "empty upload: no image data"
    assert str(unknown.value) == "not an image, or not one of PNG, JPEG, BMP, GIF, WebP"


@pytest.mark.parametrize("fmt", ["TIFF", "PPM", "TGA"])
def test_load_image_refuses_formats_outside_the_list(fmt: str) -> None:
    with pytest.raises(ImageError, match="not one of PNG, JPEG, BMP, GIF, WebP$"):
        load_image(encode(seven(), fmt))


def test_pixel_limit_is_inclusive() -> None:
    side = int(MAX_PIXELS**0.5)
    assert load_image(encode(Image.new("1", (side, side)))).size == (side, side)
    with pytest.raises(ImageError, match="too large"):
        load_image(encode(Image.new("1", (side + 1, side))))


def test_to_gray_of_colour_matches_pillows_luminance() -> None:
    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 256, size=(30, 40, 3), dtype=np.uint8))
    expected = np.asarray(rgb.convert("L"), float)  # Pillow rounds; we keep the fraction
    for image in (rgb, rgb.convert("RGBA")):
        assert np.abs(to_gray(image) - expected).max() <= 0.51


def test_to_mnist_of_a_fully_transparent_canvas_is_blank() -> None:
    assert not to_mnist(Image.new("RGBA", (50, 50), (0, 0, 0, 0))).any()


@pytest.mark.parametrize(
    ("stroke", "field"), [((0, 0, 0), (255, 255, 255)), ((255,) * 3, (0,) * 3)]
)
def test_strokes_on_transparency_read_whatever_colour_the_clear_pixels_hold(stroke, field) -> None:
    canvas = Image.new("RGBA", (120, 160), (*field, 0))  # clear pixels in the strokes' opposite
    canvas.paste(Image.new("RGBA", canvas.size, (*stroke, 255)), mask=ImageOps.invert(seven()))
    assert np.abs(to_mnist(canvas).astype(int) - to_mnist(seven())).max() <= 1


def soft_seven() -> Image.Image:
    """An antialiased '7' mask: drawn at 4× and reduced, so its edges hold partial alpha."""
    big = Image.new("L", (480, 640), 0)
    ImageDraw.Draw(big).line([(80, 120), (360, 120), (180, 560)], fill=255, width=48)
    return big.resize((120, 160), Image.Resampling.BOX)


@pytest.mark.parametrize(
    ("stroke", "paper"), [((0, 0, 0), (255, 255, 255)), ((255,) * 3, (0,) * 3)]
)
def test_soft_strokes_on_transparency_match_pillows_composite_on_contrasting_paper(stroke, paper):
    canvas = Image.new("RGBA", (120, 160), (*stroke, 0))
    canvas.putalpha(soft_seven())
    on_paper = Image.alpha_composite(Image.new("RGBA", canvas.size, (*paper, 255)), canvas)
    expected = to_mnist(on_paper.convert("L"))
    assert np.abs(to_mnist(canvas).astype(int) - expected).max() <= 1


@pytest.mark.parametrize(("paper", "ink"), [(128, 0), (127, 255)])
def test_paper_above_mid_grey_holds_dark_ink_and_below_it_light_ink(paper: int, ink: int) -> None:
    out = to_mnist(seven(ink=ink, paper=paper))
    np.testing.assert_array_equal(out, to_mnist(seven()))


def test_low_contrast_grey_digit_is_stretched_to_full_ink() -> None:
    grey = to_mnist(seven(ink=90, paper=200))
    np.testing.assert_array_equal(grey, to_mnist(seven()))
    rows, cols = np.nonzero(grey)
    assert grey[rows.max(), cols.min()] == 0  # paper inside the 7's box (lower left) stays 0


def test_contrast_of_exactly_the_threshold_is_still_a_digit() -> None:
    assert to_mnist(seven(ink=200 - MIN_CONTRAST, paper=200)).max() == 255
    assert not to_mnist(seven(ink=200 - MIN_CONTRAST + 1, paper=200)).any()


def bar_with(mark: tuple[slice, slice], level: int = 255) -> np.ndarray:
    """to_mnist of a bar 80 tall with a mark (rows, columns) far to its left."""
    pixels = np.zeros((100, 100), np.uint8)
    pixels[10:90, 45:55] = 255
    pixels[mark] = level
    return to_mnist(Image.fromarray(pixels))


BAR = bar_with((slice(0, 0), slice(0, 0)))


@pytest.mark.parametrize(
    "mark",
    [
        (slice(50, 51), slice(5, 6)),  # a speck
        (slice(50, 52), slice(5, 6)),  # a pair
        (slice(50, 54), slice(5, 9)),  # a blob of 16 pixels: 0.8 % of the ink, apart from it
        (slice(95, 97), slice(46, 50)),  # the same below the bar
    ],
)
def test_dust_apart_from_the_digit_is_dropped(mark: tuple[slice, slice]) -> None:
    np.testing.assert_array_equal(bar_with(mark), BAR)


def test_a_stroke_apart_from_the_rest_is_kept() -> None:
    assert not np.array_equal(bar_with((slice(10, 14), slice(5, 40))), BAR)  # a 5's top bar


def test_faint_ink_counts_for_the_box_from_the_ink_threshold_up() -> None:
    strip = (slice(20, 80), slice(5, 9))  # 240 pixels: no dust
    # Ink is stretched from the paper's noise threshold (4 levels) to the strokes' level (255).
    faint = next(level for level in range(256) if (level - 4) * 255 / 251 >= INK)
    assert not np.array_equal(bar_with(strip, faint), BAR)  # the strip widens the box
    np.testing.assert_array_equal(bar_with(strip, faint - 1), BAR)


def test_solid_square_becomes_an_exact_20_pixel_block_centred_in_28() -> None:
    pixels = np.zeros((120, 120), np.uint8)
    pixels[17:97, 23:103] = 255  # 80×80
    expected = np.zeros((28, 28), np.uint8)
    expected[4:24, 4:24] = 255  # centre of mass 9.5 -> offset round(4.5) = 4
    np.testing.assert_array_equal(to_mnist(Image.fromarray(pixels)), expected)


@pytest.mark.parametrize("vertical", [True, False])
def test_one_pixel_stroke_stays_one_pixel_thick(vertical: bool) -> None:
    pixels = np.zeros((100, 100), np.uint8)
    pixels[10:90, 50] = 255  # 1 wide, 80 tall
    out = to_mnist(Image.fromarray(pixels if vertical else pixels.T))
    rows, cols = np.nonzero(out if vertical else out.T)
    assert np.unique(cols).size == 1 and np.unique(rows).size == 20


@pytest.mark.parametrize("turns", [0, 1, 2, 3])
def test_lopsided_digit_is_clamped_whole_into_the_field(turns: int) -> None:
    pixels = np.zeros((100, 100), np.uint8)
    pixels[10:90, 48:52] = 255  # a stem, 80 tall
    pixels[80:90, 10:90] = 255  # a heavy base: the centre of mass sits low
    out = to_mnist(Image.fromarray(np.rot90(pixels, turns).copy()))
    out = np.rot90(out, -turns)  # back upright
    assert out[0].max() > 0 and out[20:].max() == 0  # pushed up by its low mass, stops at the edge
    assert out.sum() == pytest.approx(to_mnist(Image.fromarray(pixels)).sum(), rel=0.02)


def test_wide_top_heavy_digit_is_centred_by_mass() -> None:
    pixels = np.zeros((100, 100), np.uint8)
    pixels[30:34, 10:90] = 255  # a bar 80 wide on top
    pixels[30:70, 48:50] = 255  # a thin stem below: 40 tall in all, mass near the top
    cy, cx = centroid(to_mnist(Image.fromarray(pixels)).astype(float))
    assert abs(cy - 14) <= 0.5 and abs(cx - 14) <= 0.5


@pytest.mark.parametrize(
    ("size", "fmt"), [((37, 23), "PNG"), ((640, 480), "JPEG"), ((1, 1), "GIF"), ((37, 23), "WEBP")]
)
def test_image_pixels_reads_the_size_from_the_header_alone(size: tuple[int, int], fmt: str) -> None:
    data = encode(Image.new("L", size, 200), fmt)
    assert image_pixels(data) == size[0] * size[1]


def test_image_pixels_refuses_what_load_image_refuses() -> None:
    data = encode(Image.new("L", (100, 50)))
    assert image_pixels(data, max_pixels=5000) == 5000  # the limit is inclusive
    with pytest.raises(ImageError, match=r"^image too large: 100×50 pixels \(limit 4999\)$"):
        image_pixels(data, max_pixels=4999)
    with pytest.raises(ImageError, match="^empty upload: no image data$"):
        image_pixels(b"")
    with pytest.raises(ImageError, match="not one of PNG, JPEG, BMP, GIF, WebP$"):
        image_pixels(b"not an image at all")
    with pytest.raises(ImageError, match=r"^image too large \(decompression bomb\)"):
        image_pixels(png_header(20_000, 20_000))


def canvas_export(image: Image.Image) -> Image.Image:
    """The picture as a browser canvas saves strokes: black ink on a transparent field."""
    canvas = Image.new("RGBA", image.size, (0, 0, 0, 0))
    canvas.putalpha(ImageOps.invert(image))
    return canvas


# Real files from Pillow's encoder, one of each kind of WebP's first chunk.
WEBP_FILES = {
    "lossless": encode(seven(), "WEBP", lossless=True),  # VP8L
    "lossy": encode(seven(), "WEBP", quality=80),  # VP8
    "extended": encode(canvas_export(seven()), "WEBP", quality=80),  # VP8X: lossy with alpha
}


def test_webp_files_are_of_the_kind_named() -> None:
    chunks = {kind: data[12:16] for kind, data in WEBP_FILES.items()}
    assert chunks == {"lossless": b"VP8L", "lossy": b"VP8 ", "extended": b"VP8X"}


@pytest.mark.parametrize(
    "picture", [seven(), four(), canvas_export(seven())], ids=["seven", "four", "canvas"]
)
def test_webp_reads_like_the_png_of_the_same_picture(picture: Image.Image) -> None:
    from_png = to_mnist(load_image(encode(picture)))
    lossless = encode(picture, "WEBP", lossless=True)
    np.testing.assert_array_equal(to_mnist(load_image(lossless)), from_png)
    lossy = to_mnist(load_image(encode(picture, "WEBP", quality=80)))
    # Lossy coding moves grey edges by a level or two: 0.04 mean, 2 at most, measured.
    assert close(lossy, from_png, mean=0.5)
    assert np.abs(lossy.astype(int) - from_png).max() <= 8


@pytest.mark.parametrize(("fmt", "options"), [("GIF", {}), ("WEBP", {"lossless": True})])
def test_an_animated_image_is_read_as_its_first_frame(fmt: str, options: dict) -> None:
    frames = [seven(), Image.new("L", seven().size, 255), four()]
    data = encode(frames[0], fmt, save_all=True, append_images=frames[1:], **options)
    image = load_image(data)
    assert getattr(image, "n_frames", 1) == 3  # a real animation, of which one frame is decoded
    np.testing.assert_array_equal(to_mnist(image), to_mnist(seven()))


def declaring(data: bytes, width: int, height: int) -> bytes:
    """A WebP file whose header's size fields (RFC 9649) are rewritten to width×height."""
    chunk = data[12:16]
    if chunk == b"VP8 ":  # 14-bit width and height after the key frame's start code
        return data[:26] + struct.pack("<HH", width, height) + data[30:]
    if chunk == b"VP8L":  # 14 bits each, minus one, after the signature byte
        bits = struct.unpack("<I", data[21:25])[0] & ~0xFFFFFFF
        return data[:21] + struct.pack("<I", bits | (width - 1) | (height - 1) << 14) + data[25:]
    # VP8X: the canvas, 24 bits each, minus one
    size = (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
    return data[:24] + size + data[30:]


@pytest.mark.parametrize("kind", WEBP_FILES)
def test_webp_size_is_checked_from_its_header_before_libwebp_reads_it(kind: str) -> None:
    data = WEBP_FILES[kind]
    assert image_pixels(data) == 120 * 160
    # Only the first 30 bytes, which libwebp would refuse as truncated: the size is refused first.
    header = declaring(data, 5000, 4000)[:30]
    message = rf"^image too large: 5000×4000 pixels \(limit {MAX_PIXELS}\)$"
    for read in (image_pixels, load_image):
        with pytest.raises(ImageError, match=message):
            read(header)


BROKEN_WEBP = {
    "cut in half": WEBP_FILES["lossless"][: len(WEBP_FILES["lossless"]) // 2],
    "cut in the frame": WEBP_FILES["lossy"][:-10],
    "cut in the header": WEBP_FILES["lossless"][:24],
    "size that is not the image's": declaring(WEBP_FILES["lossless"], 640, 480),
    "canvas that is not the image's": declaring(WEBP_FILES["extended"], 64, 64),
    "lossless tag on lossy data": WEBP_FILES["lossy"][:12] + b"VP8L" + WEBP_FILES["lossy"][16:],
    "file length that is not its own": b"RIFF\xff\xff\xff\x7f" + WEBP_FILES["lossy"][8:],
}


@pytest.mark.parametrize("case", BROKEN_WEBP)
def test_truncated_or_lying_webp_is_one_clear_line(case: str) -> None:
    with pytest.raises(ImageError, match=r"^corrupt or truncated image \(") as err:
        load_image(BROKEN_WEBP[case])
    assert "\n" not in str(err.value)
