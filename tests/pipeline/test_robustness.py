"""The robustness stage on fixture data: real PNG files, the real image path, real ONNX Runtime."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from click.testing import CliRunner
from PIL import Image

from digits.cli import cli
from digits.images import load_image, to_mnist
from pipeline.config import ParamError, parse_group
from pipeline.robustness_sets.corruptions import CORRUPTIONS
from pipeline.robustness_sets.fonts import FONTS, POSITIONS, font_digits, font_file
from pipeline.robustness_sets.handwriting import STYLES, resolutions
from pipeline.robustness_sets.sets import (
    RobustnessParams,
    corruption_sets,
    subsample,
    through_image_files,
)
from tests.conftest import flat_digits, write_linear_onnx

PARAMS = {
    "robustness": {"seed": 0, "per_kind": 30, "font_sizes": [28], "examples": 2, "writers": 2}
}


def write_constant_onnx(path: Path, digit: int) -> Path:
    """A model with the digits.onnx contract that answers `digit` for every image."""
    return write_linear_onnx(path, version=f"always-{digit}", answer=digit)


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    """Params and a prepared test split of 60 fixture digits."""
    prepared = tmp_path / "prepared"
    prepared.mkdir()
    x, y = flat_digits(60, seed=7)
    np.savez(prepared / "test.npz", x=x, y=y)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(PARAMS))
    return tmp_path


def run_stage(root: Path, model: Path):
    args = ["robustness", "--params", root / "params.yaml", "--data", root / "prepared",
            "--model", model, "--metrics", root / "reports" / "robustness.json",
            "--examples", root / "reports" / "robustness"]  # fmt: skip
    return CliRunner().invoke(cli, [str(a) for a in args])


def test_the_stage_writes_each_sets_accuracy_as_the_model_answers(workspace: Path):
    model = write_constant_onnx(workspace / "three.onnx", 3)
    result = run_stage(workspace, model)
    assert result.exit_code == 0, result.output
    report = json.loads((workspace / "reports" / "robustness.json").read_text())
    x, y = flat_digits(60, seed=7)
    threes = float((y[subsample(y, 30, 0)] == 3).mean())  # the oracle: a constant answer
    assert report["clean_accuracy"] == pytest.approx(threes)
    assert report["corruptions"] == {kind: pytest.approx(threes) for kind in CORRUPTIONS}
    assert report["mean_corruption_accuracy"] == pytest.approx(threes)
    assert report["font_accuracy"] == pytest.approx(0.1)  # every digit equally often
    assert set(report["fonts"]) == {name.removesuffix(".ttf") for name in FONTS}
    assert report["handwriting_accuracy"] == pytest.approx(1 / len(STYLES))  # one style of 3
    assert list(report["handwriting"]["styles"]) == list(STYLES)
    assert report["handwriting"]["styles"]["3"] == 1.0
    assert report["handwriting"]["rare_styles"] == 0.0  # no rare style is a 3
    assert list(report["handwriting"]["resolutions"]) == resolutions()
    assert report["model_version"] == "always-3"
    assert "mean over corruptions" in result.output


def test_the_examples_are_the_png_files_with_the_models_answers(workspace: Path):
    result = run_stage(workspace, write_constant_onnx(workspace / "seven.onnx", 7))
    assert result.exit_code == 0, result.output
    examples = json.loads((workspace / "reports" / "robustness" / "examples.json").read_text())
    assert len(examples) == 2 * (3 + len(CORRUPTIONS))  # clean, corruptions, fonts, handwriting
    for example in examples:
        image = Image.open(io.BytesIO(base64.b64decode(example["png"])))
        assert image.format == "PNG" and image.mode == "L"
        assert example["answer"] == 7 and 0 <= example["label"] <= 9
        assert example["confidence"] == pytest.approx(1 / (1 + 9 * np.exp(-5)), abs=1e-4)


def test_the_same_params_give_the_same_metrics_and_a_real_model_differs_by_set(workspace: Path):
    model = write_linear_onnx(workspace / "linear.onnx", seed=3)
    outputs = []
    for _ in range(2):
        assert run_stage(workspace, model).exit_code == 0
        outputs.append((workspace / "reports" / "robustness.json").read_bytes())
    assert outputs[0] == outputs[1]
    accuracies = json.loads(outputs[0])["corruptions"].values()
    assert len(set(accuracies)) > 1  # the sets really differ as the model sees them


def test_through_image_files_is_the_image_path_on_the_same_pixels(tmp_path: Path):
    x, _ = flat_digits(5, seed=2)
    images = list(x.reshape(-1, 28, 28))
    pixels = through_image_files(images, tmp_path / "set")
    direct = [to_mnist(Image.fromarray(image)).reshape(-1) for image in images]
    assert np.array_equal(pixels, np.stack(direct))  # PNG is lossless: files change nothing
    written = sorted((tmp_path / "set").iterdir())
    assert len(written) == 5
    assert np.array_equal(to_mnist(load_image(written[0].read_bytes())).reshape(-1), pixels[0])


def test_corruption_sets_share_one_seeded_subsample(tmp_path: Path):
    x, y = flat_digits(50, seed=1)
    sets = corruption_sets(x, y, 20, seed=4)
    assert list(sets) == ["clean", *CORRUPTIONS]
    for images, labels in sets.values():
        assert len(images) == 20 and np.array_equal(labels, sets["clean"][1])
    again = corruption_sets(x, y, 20, seed=4)
    assert all(np.array_equal(a, b) for a, b in zip(sets["fog"][0], again["fog"][0], strict=True))
    assert len(corruption_sets(x, y, 500, seed=4)["clean"][0]) == 50  # capped at the split


def test_font_digits_are_dark_ink_on_white_paper_in_each_place():
    images, labels, names = font_digits((20,))
    assert len(images) == len(FONTS) * len(POSITIONS) * 10
    assert np.array_equal(np.bincount(labels), [len(FONTS) * len(POSITIONS)] * 10)
    for image in images:
        assert image.dtype == np.uint8 and image[0, 0] == 255  # paper
        assert (image < 128).sum() > 10  # ink
    # The three positions of one glyph put its ink in three different places.
    centres = {tuple(np.argwhere(images[k * 10] < 128).mean(axis=0).round()) for k in range(3)}
    assert len(centres) == 3
    assert all(font_file(name).is_file() for name in FONTS)
    assert names[0] == FONTS[0].removesuffix(".ttf")


@pytest.mark.parametrize(
    ("raw", "key"),
    [({"per_kind": 0}, "per_kind"), ({"font_sizes": [4]}, "font_sizes"),
     ({"examples": -1}, "examples"), ({"seed": -2}, "seed")],
)  # fmt: skip
def test_bad_robustness_params_name_their_key(raw: dict, key: str):
    with pytest.raises(ParamError, match=f"robustness.{key}"):
        parse_group(RobustnessParams, "robustness", raw)
