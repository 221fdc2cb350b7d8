"""Stage `report`: a Markdown report with PNG figures that explains the models without running them.

Reads: reports/evaluate.json, reports/evaluate/detail.json, reports/learning_curve.json,
reports/compress.json, reports/train.json, reports/train/, reports/robustness.json and
reports/robustness/examples.json, reports/frontier.json (bench/frontier.py, outside the DAG;
each one's section is skipped when absent),
data/prepared/test.npz (images of the worst errors), params.yaml `report` (the seed
band this run is compared with).
Writes: reports/figures/ (confusion.png, reliability.png, learning_curve.png,
worst_errors.png, robustness.png, frontier.png, and from the train stage's diagnostics
gradients.png, activations.png, weight_histograms.png, first_layer.png, hidden_pca.png), then
reports/report.md.
Run: `digits report`
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import numpy as np

from digits.atomic import atomic_dir, refuse_foreign, write_bytes
from digits.npz import read_split
from pipeline.analysis.report_figures import (
    percent,
    plot_confusion,
    plot_frontier,
    plot_learning_curve,
    plot_reliability,
    plot_robustness,
    plot_worst_errors,
)
from pipeline.analysis.training_figures import (
    DIAGNOSTIC_FIGURES,
    diagnostics_section,
    plot_activations,
    plot_first_layer,
    plot_gradients,
    plot_hidden_pca,
    plot_weight_histograms,
)
from pipeline.config import load_group, require
from pipeline.options import params_option, path_option, prepared_option

MODELS = ("dense", "compressed")
# What `digits report` draws into reports/figures/, and so may replace there.
FIGURES = (
    "confusion.png",
    "reliability.png",
    "worst_errors.png",
    "learning_curve.png",
    "robustness.png",
    "frontier.png",
    *DIAGNOSTIC_FIGURES,
)


@dataclass(frozen=True)
class ReportParams:
    """params.yaml `report:` group: test accuracy over seeds, measured once (README, Results)."""

    seeds: tuple[int, ...] = ()  # the base.seed values the band was measured with
    dense_test: tuple[float, ...] = ()  # (mean, std) of the dense model's test accuracy
    compressed_test: tuple[float, ...] = ()  # (mean, std) of the compressed model's

    def __post_init__(self) -> None:
        for key in ("dense_test", "compressed_test"):
            band = getattr(self, key)
            require(len(band) in (0, 2), f"report.{key}", "must be [mean, std] or empty")
            require(not band or band[1] >= 0, f"report.{key}", "std must be >= 0")


def robustness_section(report: dict[str, Any] | None) -> list[str]:
    """Markdown: accuracy on each corruption and on the font set, and the examples figure."""
    if report is None:
        return ["Not computed: run `digits robustness` (or `dvc repro robustness`)."]
    lines = [
        "The exported ONNX model on test images written as PNG files and read back through the "
        "image path (`digits score`, `POST /predict_image`): clean, under each corruption "
        "(`pipeline/robustness_sets/corruptions.py`, one fixed severity each, seeded), digits "
        "printed in the fonts matplotlib ships (`pipeline/robustness_sets/fonts.py`), and "
        "handwriting in styles MNIST lacks, drawn from stroke skeletons and scanned at low "
        "resolution (`pipeline/robustness_sets/handwriting.py`).",
        "",
        f"Clean {percent(report['clean_accuracy'])}; mean over corruptions "
        f"**{percent(report['mean_corruption_accuracy'])}** (worst: "
        f"{report['worst_corruption']}, {percent(report['worst_corruption_accuracy'])}); "
        f"font set **{percent(report['font_accuracy'])}**; handwriting "
        f"**{percent(report['handwriting_accuracy'])}**.",
        "",
        "| set | accuracy |",
        "|---|---|",
        f"| clean | {percent(report['clean_accuracy'])} |",
    ]
    lines += [f"| {name} | {percent(value)} |" for name, value in report["corruptions"].items()]
    lines += [f"| fonts | {percent(report['font_accuracy'])} |", ""]
    fonts = ", ".join(f"{name} {percent(value)}" for name, value in report["fonts"].items())
    lines += [f"Per font: {fonts}.", ""]
    lines += handwriting_lines(report["handwriting"])
    lines += ["", "![robustness examples](figures/robustness.png)"]
    return lines


def handwriting_lines(handwriting: dict[str, Any]) -> list[str]:
    """Markdown: the handwriting set by style and by resolution."""
    styles = ", ".join(f"{name} {percent(v)}" for name, v in handwriting["styles"].items())
    scans = ", ".join(f"{name} {percent(v)}" for name, v in handwriting["resolutions"].items())
    return [
        f"Handwriting, the styles MNIST lacks: **{percent(handwriting['rare_styles'])}**. "
        f"Per style: {styles}. Per resolution: {scans}."
    ]


def metrics_table(summary: dict[str, Any]) -> list[str]:
    """Markdown rows: accuracy per split, test loss, macro F1 and ECE for each model."""
    lines = [
        "| model | train acc | dev acc | test acc | test loss | test macro F1 | test ECE |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in MODELS:
        m = summary[name]
        accuracies = " | ".join(percent(m[f"{s}_accuracy"]) for s in ("train", "dev", "test"))
        lines.append(
            f"| {name} | {accuracies} | {m['test_loss']:.4f} | {m['test_macro_f1']:.4f} "
            f"| {m['test_ece']:.4f} |"
        )
    return lines


def diagnosis_section(summary: dict[str, Any]) -> list[str]:
    """Markdown: the bias/variance table and each model's next steps."""
    bayes = summary["diagnosis"][MODELS[0]]["bayes_error"]
    lines = [
        f"Bayes-error proxy: {percent(bayes)}. Avoidable bias = train error − proxy; "
        "variance = dev error − train error; the dev→test gap checks that dev and test "
        "come from one distribution.",
        "",
        "| model | train error | dev error | test error | avoidable bias | variance "
        "| dev→test gap | verdict |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name in MODELS:
        m, d = summary[name], summary["diagnosis"][name]
        errors = " | ".join(percent(m[f"{s}_error"]) for s in ("train", "dev", "test"))
        gaps = " | ".join(percent(d[k]) for k in ("avoidable_bias", "variance", "dev_test_gap"))
        lines.append(f"| {name} | {errors} | {gaps} | **{d['verdict']}** |")
    steps = {name: summary["diagnosis"][name]["next_steps"] for name in MODELS}
    if steps["dense"] == steps["compressed"]:
        steps = {"both models": steps["dense"]}
    for name, items in steps.items():
        lines += ["", f"Next steps ({name}):", ""]
        lines += [f"- {step}" for step in items]
    return lines


def per_class_table(details: dict[str, Any]) -> list[str]:
    """Markdown rows: test precision, recall and F1 per digit for each model."""
    header = " | ".join(f"{name} {k}" for name in details for k in ("precision", "recall", "F1"))
    lines = [f"| digit | support | {header} |", "|---" * (2 + 3 * len(details)) + "|"]
    for digit in range(10):
        cells = []
        for detail in details.values():
            scores = detail["test"]["per_class"]
            cells += [f"{scores[k][digit]:.4f}" for k in ("precision", "recall", "f1")]
        support = next(iter(details.values()))["test"]["per_class"]["support"][digit]
        lines.append(f"| {digit} | {support} | " + " | ".join(cells) + " |")
    return lines


def curve_section(rows: list[dict[str, Any]] | None) -> list[str]:
    """Markdown: the learning-curve figure and its table, or how to produce it."""
    if rows is None:
        return ["Not computed: run `digits learning-curve` (or `dvc repro learning-curve`)."]
    lines = [
        "![learning curve](figures/learning_curve.png)",
        "",
        "A gap between the curves that shrinks with more data means variance (more data "
        "helps); both curves flat and high above the proxy means bias (more data will not). "
        "Every point gets the same number of updates, so the largest subsets are trained "
        "least; the stars are the dense model, trained on the full split for longer.",
        "",
        "| training images | epochs | train error | dev error |",
        "|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['train_size']} | {row['epochs']} | {percent(row['train_error'])} "
            f"| {percent(row['dev_error'])} |"
        )
    return lines


def compress_section(report: dict[str, Any] | None) -> list[str]:
    """Markdown: whether compression met its targets, and what the compressed model computes."""
    if report is None:
        return ["Not computed: run `digits compress` (or `dvc repro compress`)."]
    targets = report.get("targets", {})
    missed = [name for name, figures in targets.items() if not figures["met"]]
    verdict = "met" if not missed else f"**MISSED** ({', '.join(missed)})"
    lines = [f"Compression targets: {verdict}.", ""]
    for name, figures in targets.items():
        reached, target = (
            f"{value:,}" if isinstance(value, int) else f"{value:.4g}"
            for value in (figures["reached"], figures["target"])
        )
        lines.append(f"- {name}: {reached} (target {target})")
    deployed = report.get("deployed")
    if deployed:
        entries = deployed["preprocess_map_entries"]
        where = f"kept apart ({entries:,} entries)" if entries else "folded into the first layer"
        lines += [
            "",
            f"Learned-weight sparsity {percent(report['sparsity'])}; the compressed model "
            f"computes with {deployed['weights_nonzero']:,} nonzero weights, its preprocessing "
            f"map {where}: {deployed['macs_per_image']:,} multiply-adds per image.",
        ]
    return lines


def frontier_section(frontier: dict[str, Any] | None) -> list[str]:
    """Markdown: accuracy at each nonzero-weight budget over seeds, and the frontier figure."""
    if frontier is None:
        return ["Not measured: run `python bench/frontier.py` (DVC experiments, outside the DAG)."]
    seeds = ", ".join(str(seed) for seed in frontier["seeds"])
    lines = [
        f"Mean ± std over seeds {seeds} ({frontier['cpu']}), from `python bench/frontier.py`;",
        "nonzero weights are those of every weight matrix in the ONNX graph.",
        "",
        "| method | budget | nonzero | dev | test | dense test |",
        "|---|---|---|---|---|---|",
    ]
    for row in frontier["rows"]:
        lines.append(
            f"| {row['method']} | {row['budget']:,} | {row['nonzero']:,.0f} "
            f"| {percent(row['dev'])} ± {100 * row['dev_std']:.2f} "
            f"| {percent(row['test'])} ± {100 * row['test_std']:.2f} "
            f"| {percent(row['dense_test'])} ± {100 * row['dense_test_std']:.2f} |"
        )
    return [*lines, "", "![size against accuracy](figures/frontier.png)"]


def band_section(summary: dict[str, Any], band: ReportParams) -> list[str]:
    """Where this run's test accuracy falls in the band measured over several seeds."""
    seeds = ", ".join(str(seed) for seed in band.seeds)
    lines = []
    for model in MODELS:
        reference = getattr(band, f"{model}_test")
        if not reference:
            continue
        mean, std = reference
        test = summary[model]["test_accuracy"]
        distance = (test - mean) / std if std else float("inf") * (test != mean)
        where = "inside" if abs(distance) <= 2 else "OUTSIDE"
        lines.append(
            f"- {model}: test {percent(test)}; over seeds {seeds} it was "
            f"{percent(mean)} ± {100 * std:.2f} pp, so this run is {distance:+.1f} std from the "
            f"mean ({where} ±2 std)."
        )
    if not lines:
        return ["No seed band recorded (params `report`): one run is not a claim."]
    return ["A single run varies with the seed and the CPU; the band is mean ± std.", "", *lines]


def render_markdown(
    summary: dict[str, Any],
    details: dict[str, Any],
    curve: list[dict[str, Any]] | None,
    band: ReportParams,
    compressed: dict[str, Any] | None = None,
    trained: dict[str, Any] | None = None,
    robustness: dict[str, Any] | None = None,
    frontier: dict[str, Any] | None = None,
) -> str:
    """The whole report as Markdown, figures linked from figures/."""
    test = summary["compressed"]["test_accuracy"]
    lines = [
        "# digits: evaluation report",
        "",
        f"The compressed model (the one exported) classifies {percent(test)} of the 10,000 "
        f"official MNIST test images correctly; its verdict is "
        f"**{summary['diagnosis']['compressed']['verdict']}**.",
        "",
        "## Metrics",
        "",
        *metrics_table(summary),
        "",
        "## Compression",
        "",
        *compress_section(compressed),
        "",
        "## Size against accuracy",
        "",
        *frontier_section(frontier),
        "",
        "## This run against the seed band",
        "",
        *band_section(summary, band),
        "",
        "## Bias and variance",
        "",
        *diagnosis_section(summary),
        "",
        "## Learning curve",
        "",
        *curve_section(curve),
        "",
        "## Inside the network (dense model, training)",
        "",
        *diagnostics_section(trained),
        "",
        "## Confusion matrices (test)",
        "",
        "![confusion matrices](figures/confusion.png)",
        "",
        "## Per-class scores (test)",
        "",
        *per_class_table(details),
        "",
        "## Calibration (test)",
        "",
        "Points under the diagonal are overconfident bins.",
        "",
        "![reliability diagram](figures/reliability.png)",
        "",
        "## Worst errors (compressed model, test)",
        "",
        "![worst errors](figures/worst_errors.png)",
        "",
        "## Robustness (deployed model, image files)",
        "",
        *robustness_section(robustness),
    ]
    return "\n".join(lines) + "\n"


def write_report(reports: Path, test_images: np.ndarray, band: ReportParams) -> None:
    """Draw the figures and write report.md from the evaluate (and learning-curve) outputs."""
    refuse_foreign(reports / "figures", FIGURES, "digits report")  # before any drawing
    summary = json.loads((reports / "evaluate.json").read_text())
    detail = json.loads((reports / "evaluate" / "detail.json").read_text())
    details = {name: detail[name] for name in MODELS}
    curve_file = reports / "learning_curve.json"
    curve = json.loads(curve_file.read_text()) if curve_file.exists() else None
    compress_file = reports / "compress.json"
    compressed = json.loads(compress_file.read_text()) if compress_file.exists() else None
    robustness_file = reports / "robustness.json"
    robustness = json.loads(robustness_file.read_text()) if robustness_file.exists() else None
    examples_file = reports / "robustness" / "examples.json"
    frontier_file = reports / "frontier.json"
    frontier = json.loads(frontier_file.read_text()) if frontier_file.exists() else None
    figures = {
        "confusion": plot_confusion(details),
        "reliability": plot_reliability(details),
        "worst_errors": plot_worst_errors(details["compressed"]["worst_errors"], test_images),
    }
    if curve is not None:
        bayes = detail["params"]["bayes_error"]
        figures["learning_curve"] = plot_learning_curve(curve, bayes, summary["dense"])
    if robustness is not None and examples_file.exists():
        figures["robustness"] = plot_robustness(json.loads(examples_file.read_text()))
    if frontier is not None:
        deployed = None
        if compressed is not None:
            test = summary["compressed"]["test_accuracy"]
            deployed = (compressed["deployed"]["nonzero_total"], test)
        figures["frontier"] = plot_frontier(frontier, deployed)
    trained = read_training(reports)
    if trained is not None:
        figures.update(
            gradients=plot_gradients(trained["diagnostics"]),
            activations=plot_activations(trained["diagnostics"]),
            weight_histograms=plot_weight_histograms(trained["diagnostics"]),
            first_layer=plot_first_layer(trained["pictures"]),
            hidden_pca=plot_hidden_pca(trained["pictures"]),
        )
    # Rendered before any write: bad input writes nothing.
    markdown = render_markdown(
        summary, details, curve, band, compressed, trained, robustness, frontier
    )
    with atomic_dir(reports / "figures", FIGURES, "digits report") as tmp:
        for name, fig in figures.items():
            fig.savefig(tmp / f"{name}.png", dpi=100)
    write_bytes(reports / "report.md", markdown.encode())


def read_training(reports: Path) -> dict[str, Any] | None:
    """The train stage's verdict, per-epoch diagnostics and pictures; None if any is missing."""
    files = {
        "train": reports / "train.json",
        "diagnostics": reports / "train" / "diagnostics.json",
        "pictures": reports / "train" / "pictures.json",
    }
    if not all(path.exists() for path in files.values()):
        return None
    return {name: json.loads(path.read_text()) for name, path in files.items()}


@click.command("report")
@params_option
@path_option(
    "--reports",
    default="reports",
    help="Directory with evaluate.json; report.md and figures/ are written there.",
    file_okay=False,
    exists=True,
)
@prepared_option("Prepared splits (test images for the worst-errors grid).")
def report_command(params_file: Path, reports: Path, prepared: Path) -> None:
    """Write reports/report.md with its figures from the evaluate and learning-curve outputs."""
    band = load_group(ReportParams, "report", params_file)
    images, _ = read_split(prepared / "test.npz")
    try:
        write_report(reports, images, band)
    except (KeyError, IndexError, json.JSONDecodeError) as err:
        raise click.ClickException(
            f"{reports}: not what `digits evaluate` writes ({err})"
        ) from None
    click.echo(f"wrote {reports / 'report.md'} and {reports / 'figures'}/")
