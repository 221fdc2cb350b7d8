"""MNIST's own test digits saved as PNG files score like their raw pixels through the image path,
and drawn with a thin pen, a fat marker or at low resolution they still read well.

Needs the recorded run's files (`dvc repro` or `dvc pull`): data/raw's test IDX files and
models/digits.onnx; without them it is skipped. The same check on all 10,000 images is a figure
in docs/robustness.md (bench/image_path.py).
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFilter, ImageOps

from digits.idx import read_idx
from digits.images import load_image, prepare
from serving.session import load_model

ROOT = Path(__file__).resolve().parents[2]
IMAGES = ROOT / "data" / "raw" / "t10k-images-idx3-ubyte"
LABELS = ROOT / "data" / "raw" / "t10k-labels-idx1-ubyte"
MODEL = ROOT / "models" / "digits.onnx"
STEP = 2  # every other test image: 5,000, all classes, a few seconds


needs_recorded_run = pytest.mark.skipif(
    not (IMAGES.is_file() and LABELS.is_file() and MODEL.is_file()),
    reason="needs MNIST's test set and models/digits.onnx (dvc repro, or dvc pull)",
)


def png(image: Image.Image) -> bytes:
    """PNG bytes of a picture."""
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


@needs_recorded_run
def test_mnist_test_digits_as_png_files_score_within_a_tenth_of_a_point() -> None:
    x, y = read_idx(IMAGES)[::STEP], read_idx(LABELS)[::STEP]
    model = load_model(MODEL, "cpu")
    pixel_digits = model.predict(x.reshape(len(x), 784).astype(np.float32))[1].argmax(axis=1)
    prepared = []
    for pixels in x:
        prepared.append(prepare(load_image(png(Image.fromarray(pixels)))))
    assert all(p.reason is None for p in prepared)  # every MNIST digit is a digit
    X = np.stack([p.pixels for p in prepared]).reshape(len(x), 784).astype(np.float32)
    image_digits = model.predict(X)[1].argmax(axis=1)
    right_image, right_pixels = int((image_digits == y).sum()), int((pixel_digits == y).sum())
    assert abs(right_image - right_pixels) <= len(y) // 1000, (right_image, right_pixels)  # 0.1 pp
    assert (image_digits != pixel_digits).sum() <= 0.003 * len(
        y
    )  # the same answers, not just as many


def thin_pen(pixels: np.ndarray) -> Image.Image:
    """A 224-px scan of a thin pen: the digit 8× larger, strokes eroded to about a third."""
    big = Image.fromarray(pixels).resize((224, 224), Image.Resampling.BICUBIC)
    return ImageOps.invert(big.filter(ImageFilter.MinFilter(9)))


def fat_marker(pixels: np.ndarray) -> Image.Image:
    """A fat marker on white: strokes grown by a pixel on each side."""
    return ImageOps.invert(Image.fromarray(pixels).filter(ImageFilter.MaxFilter(3)))


def low_resolution(pixels: np.ndarray) -> Image.Image:
    """The digit on white, photographed at 14×14 pixels."""
    return Image.fromarray(255 - pixels).resize((14, 14), Image.Resampling.BOX)


@needs_recorded_run
@pytest.mark.parametrize("render", [thin_pen, fat_marker, low_resolution])
def test_thin_fat_and_low_resolution_strokes_read_well(render) -> None:
    # Before the stroke-width normalization: thin pen 94 %, fat marker 93.5 % (docs/robustness.md).
    x, y = read_idx(IMAGES)[::10], read_idx(LABELS)[::10]
    X = np.stack([prepare(load_image(png(render(a)))).pixels for a in x]).reshape(len(x), 784)
    accuracy = load_model(MODEL, "cpu").predict(X.astype(np.float32))[1].argmax(axis=1) == y
    assert accuracy.mean() >= 0.95
