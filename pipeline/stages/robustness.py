"""Stage `robustness`: the deployed ONNX model on corrupted, printed and handwritten digits, read as
image files.

A seeded subsample of the test split, clean and under each corruption of
pipeline/robustness_sets/corruptions.py, the digits of several fonts
(pipeline/robustness_sets/fonts.py) and handwriting in styles MNIST lacks, drawn and scanned at
low resolution (pipeline/robustness_sets/handwriting.py), are written as PNG files and read back
through the image path `digits score` and `POST /predict_image` use (digits/images.py), then
scored by the ONNX file on ONNX Runtime: the deployed path end to end.
Reads: models/digits.onnx, data/prepared/test.npz, params.yaml `base`, `robustness`.
Writes: reports/robustness.json (metrics: accuracy per set, the corruptions' mean, the font set's
and each font's, the handwriting set's, per style and per resolution),
reports/robustness/examples.json (a few of each set's PNG files, base64, with the model's answers;
`digits report` draws them).
Run: `digits robustness`
"""

from __future__ import annotations

import base64
import tempfile
from pathlib import Path
from typing import Any

import click
import numpy as np
import onnxruntime as ort

from digits.atomic import atomic_dir, write_json
from digits.contract import UNKNOWN_VERSION, VERSION_KEY
from digits.npz import read_split
from pipeline.analysis.classification import accuracy
from pipeline.config import BaseParams, begin_stage, load_group
from pipeline.onnx_export.plain_session import cpu_session, onnx_probabilities
from pipeline.options import params_option, path_option, prepared_option
from pipeline.robustness_sets.corruptions import CORRUPTIONS
from pipeline.robustness_sets.fonts import font_digits
from pipeline.robustness_sets.handwriting import handwriting_digits, rare_styles
from pipeline.robustness_sets.sets import (
    RobustnessParams,
    corruption_sets,
    image_file,
    through_image_files,
)

# What `digits robustness` writes into --examples, and so may replace there.
OUTPUTS = ("examples.json",)


def accuracy_by(groups: list[str], probs: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """Accuracy within each group name, in the order the names first appear."""
    names = np.array(groups)
    return {g: accuracy(probs[names == g], y[names == g]) for g in dict.fromkeys(groups)}


def summarize(
    accuracy: dict[str, float], fonts: dict[str, float], handwriting: dict, version: str
) -> dict:
    """The metrics: clean, per corruption, their mean and worst, the font set and each font,
    the handwriting set, per style and per resolution."""
    corruptions = {name: value for name, value in accuracy.items() if name in CORRUPTIONS}
    worst = min(corruptions, key=corruptions.__getitem__)
    return {
        "model_version": version,
        "clean_accuracy": accuracy["clean"],
        "mean_corruption_accuracy": float(np.mean(list(corruptions.values()))),
        "worst_corruption": worst,
        "worst_corruption_accuracy": corruptions[worst],
        "font_accuracy": accuracy["fonts"],
        "handwriting_accuracy": accuracy["handwriting"],
        "corruptions": corruptions,
        "fonts": fonts,
        "handwriting": handwriting,
    }


def pick_examples(
    name: str, directory: Path, labels: np.ndarray, probs: np.ndarray, k: int
) -> list:
    """k image files spread evenly over one set, each with its label and the model's answer."""
    picked = np.unique(np.linspace(0, len(labels) - 1, k).astype(int)) if k and len(labels) else []
    return [
        {
            "set": name,
            "label": int(labels[i]),
            "answer": int(probs[i].argmax()),
            "confidence": round(float(probs[i].max()), 4),
            "png": base64.b64encode(image_file(directory, i).read_bytes()).decode(),
        }
        for i in picked
    ]


def benchmark(session: ort.InferenceSession, test: tuple, params: RobustnessParams) -> tuple:
    """Score every set through image files; return the metrics and the report's examples."""
    sets = corruption_sets(*test, params.per_kind, params.seed)
    font_images, font_labels, font_names = font_digits(params.font_sizes)
    sets["fonts"] = (font_images, font_labels)
    hand_images, hand_labels, styles, scans = handwriting_digits(params.writers, params.seed)
    sets["handwriting"] = (hand_images, hand_labels)
    probs: dict[str, np.ndarray] = {}
    examples: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, (images, labels) in sets.items():
            directory = Path(tmp) / name
            probs[name] = onnx_probabilities(session, through_image_files(images, directory))
            examples += pick_examples(name, directory, labels, probs[name], params.examples)
    scores = {name: accuracy(probs[name], labels) for name, (_, labels) in sets.items()}
    fonts = accuracy_by(font_names, probs["fonts"], font_labels)
    rare = np.isin(styles, rare_styles())
    handwriting = {
        "rare_styles": accuracy(probs["handwriting"][rare], hand_labels[rare]),
        "styles": accuracy_by(styles, probs["handwriting"], hand_labels),
        "resolutions": accuracy_by(scans, probs["handwriting"], hand_labels),
    }
    version = session.get_modelmeta().custom_metadata_map.get(VERSION_KEY, UNKNOWN_VERSION)
    return summarize(scores, fonts, handwriting, version), examples


@click.command("robustness")
@params_option
@prepared_option("Prepared splits (the test split is corrupted).")
@path_option(
    "--model", default="models/digits.onnx", help="ONNX model.", exists=True, dir_okay=False
)
@path_option(
    "--metrics",
    "metrics_file",
    default="reports/robustness.json",
    help="Metrics JSON to write.",
    dir_okay=False,
)
@path_option(
    "--examples",
    "examples_dir",
    default="reports/robustness",
    help="Directory for examples.json (the report's figure).",
    file_okay=False,
)
def robustness_command(
    params_file: Path, prepared: Path, model: Path, metrics_file: Path, examples_dir: Path
) -> None:
    """Score the ONNX model on corrupted test images, printed and handwritten digits, as files."""
    begin_stage(load_group(BaseParams, "base", params_file))
    params = load_group(RobustnessParams, "robustness", params_file)
    session = cpu_session(model)
    report, examples = benchmark(session, read_split(prepared / "test.npz"), params)
    with atomic_dir(examples_dir, OUTPUTS, "digits robustness") as tmp:
        write_json(tmp / "examples.json", examples)
    write_json(metrics_file, report)
    click.echo(
        f"clean {report['clean_accuracy']:.4f}, mean over corruptions "
        f"{report['mean_corruption_accuracy']:.4f} (worst {report['worst_corruption']} "
        f"{report['worst_corruption_accuracy']:.4f}), fonts {report['font_accuracy']:.4f}, "
        f"handwriting {report['handwriting_accuracy']:.4f}"
    )
