"""The image path against the pixel path: MNIST test digits as files; pictures with no digit.

Reads the raw MNIST test IDX files and an ONNX model; writes a JSON result (default
bench/results/image_path.json) and prints a summary. Each test image is encoded as a file the
way real pictures come (plain PNG, 16-bit, dark ink on lit paper, a scan at 8×, a thin pen, a
fat marker, low resolution, a canvas export, a JPEG photo), decoded and prepared by
digits.images exactly as `digits score` and /predict_image do, and scored; accuracy is compared
with the raw pixels scored directly. Blank, one-colour, noise and 1×1 pictures show what the
image path answers when there is no digit.

    python bench/image_path.py --model models/digits.onnx [--images 10000]

Runs on older checkouts too (they have no `prepare`, so no reasons), to measure "before".
"""

from __future__ import annotations

import argparse
import io
import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter, ImageOps

from digits import images
from digits.idx import read_idx
from serving.session import OnnxModel, load_model


def encoded(image: Image.Image, fmt: str = "PNG", **options: object) -> bytes:
    """The picture as file bytes."""
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def on_lit_paper(pixels: np.ndarray) -> Image.Image:
    """Dark ink on white paper under light falling off from 250 to 150 across the page."""
    light = np.linspace(250, 150, 28)[None, :]
    return Image.fromarray((light * (1 - pixels / 255 * 0.85)).astype(np.uint8))


def canvas(pixels: np.ndarray) -> Image.Image:
    """A drawing app's export: black strokes whose alpha is the ink, on a transparent field."""
    rgba = np.zeros((28, 28, 4), np.uint8)
    rgba[..., 3] = pixels
    return Image.fromarray(rgba, mode="RGBA")


def thin_pen(pixels: np.ndarray) -> Image.Image:
    """A 224-px scan of a thin pen: the digit 8× larger, strokes eroded to about a third."""
    big = Image.fromarray(pixels).resize((224, 224), Image.Resampling.BICUBIC)
    return ImageOps.invert(big.filter(ImageFilter.MinFilter(9)))


def marker(pixels: np.ndarray) -> Image.Image:
    """A fat marker on white: strokes grown by a pixel on each side."""
    return ImageOps.invert(Image.fromarray(pixels).filter(ImageFilter.MaxFilter(3)))


RENDERINGS: dict[str, Callable[[np.ndarray], bytes]] = {
    "png": lambda x: encoded(Image.fromarray(x)),
    "16-bit dark on white": lambda x: encoded(Image.fromarray(65535 - x.astype(np.uint16) * 257)),
    "dark ink on lit paper": lambda x: encoded(on_lit_paper(x)),
    "scan at 8x (224 px)": lambda x: encoded(
        Image.fromarray(255 - x).resize((224, 224), Image.Resampling.BICUBIC)
    ),
    "thin pen, 224 px scan": lambda x: encoded(thin_pen(x)),
    "fat marker": lambda x: encoded(marker(x)),
    "low resolution (14 px)": lambda x: encoded(
        Image.fromarray(255 - x).resize((14, 14), Image.Resampling.BOX)
    ),
    "canvas export (alpha)": lambda x: encoded(canvas(x)),
    "JPEG photo (grey paper)": lambda x: encoded(
        Image.fromarray((200 - x / 255 * 140).astype(np.uint8)), "JPEG", quality=75
    ),
}

NO_DIGIT: dict[str, Image.Image] = {
    "blank white 64x64": Image.new("L", (64, 64), 255),
    "blank black 64x64": Image.new("L", (64, 64), 0),
    "uniform grey 64x64": Image.new("L", (64, 64), 128),
    "1x1": Image.new("L", (1, 1), 200),
    "uniform noise 64x64": Image.fromarray(
        np.random.default_rng(0).integers(0, 256, (64, 64), dtype=np.uint8)
    ),
}


def prepared(data: bytes) -> tuple[np.ndarray, str | None]:
    """File bytes -> (28, 28) pixels and the reason there is no digit (None on old checkouts)."""
    image = images.load_image(data)
    prepare = getattr(images, "prepare", None)  # absent before the no-digit answers
    if prepare is None:
        return images.to_mnist(image), None
    result = prepare(image)
    return result.pixels, result.reason


def score_rendering(
    model: OnnxModel, render: Callable[[np.ndarray], bytes], x: np.ndarray, y: np.ndarray
) -> dict[str, float]:
    """Accuracy and timing of one rendering of the test images through the image path."""
    files = [render(a) for a in x]
    started = time.perf_counter()  # the image path alone: decoding and preparing
    outs = [prepared(data) for data in files]
    seconds = time.perf_counter() - started
    X = np.stack([p for p, _ in outs]).reshape(len(x), 784).astype(np.float32)
    answered = np.array([r is None for _, r in outs])
    digits = model.predict(X)[1].argmax(axis=1)
    right = (digits == y) & answered
    return {
        "accuracy": float(right.mean()),
        "no_digit": int((~answered).sum()),
        "ms_per_image": 1000 * seconds / len(x),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=Path("models/digits.onnx"))
    parser.add_argument("--images", type=int, default=10_000, help="test images to use")
    parser.add_argument("--raw", type=Path, default=Path("data/raw"), help="MNIST's IDX files")
    parser.add_argument("--out", type=Path, default=Path("bench/results/image_path.json"))
    args = parser.parse_args()
    model = load_model(args.model, "cpu")
    x = read_idx(args.raw / "t10k-images-idx3-ubyte")[: args.images]
    y = read_idx(args.raw / "t10k-labels-idx1-ubyte")[: args.images]
    pixel_digits = model.predict(x.reshape(len(x), 784).astype(np.float32))[1].argmax(axis=1)
    result = {"images": len(x), "pixel_path_accuracy": float((pixel_digits == y).mean())}
    print(f"pixel path: {result['pixel_path_accuracy']:.2%} on {len(x)} test images")
    result["renderings"] = {}
    for name, render in RENDERINGS.items():
        figures = score_rendering(model, render, x, y)
        result["renderings"][name] = figures
        print(f"{name:>24}: {figures['accuracy']:.2%}, no digit {figures['no_digit']}, "
              f"{figures['ms_per_image']:.2f} ms/image")  # fmt: skip
    result["no_digit_pictures"] = {}
    for name, image in NO_DIGIT.items():
        pixels, reason = prepared(encoded(image))
        P = model.predict(pixels.reshape(1, 784).astype(np.float32))[1][0]
        answer = {"digit": None if reason else int(P.argmax()), "reason": reason}
        answer["confidence"] = None if reason else round(float(P.max()), 3)
        result["no_digit_pictures"][name] = answer
        print(f"{name:>24}: {answer}")
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
