"""The report's compression and robustness sections: what was measured, in words and figures."""

from __future__ import annotations

import base64
import io
import re

import numpy as np
from PIL import Image

from pipeline.analysis.report_figures import PUBLISHED, plot_frontier, plot_robustness
from pipeline.analysis.training_figures import (
    DIAGNOSTIC_FIGURES,
    diagnostics_section,
    plot_activations,
    plot_first_layer,
    plot_gradients,
    plot_hidden_pca,
    plot_weight_histograms,
)
from pipeline.stages.report import compress_section, frontier_section, robustness_section
from tests.pipeline.conftest import diagnosed_run

TARGETS = {
    "sparsity": {"target": 0.9, "reached": 0.9, "met": True},
    "max_dev_drop_pp": {"target": 0.5, "reached": 1.08, "met": False},
}
DEPLOYED = {"weights_nonzero": 20000, "preprocess_map_entries": 39200, "macs_per_image": 59200}


def test_a_missed_target_is_a_visible_line_naming_it():
    lines = compress_section({"sparsity": 0.9, "targets": TARGETS, "deployed": DEPLOYED})
    assert lines[0] == "Compression targets: **MISSED** (max_dev_drop_pp)."
    # Every target, met or not, with what was reached, in the order compress recorded them.
    assert [line for line in lines if line.startswith("- ")] == [
        "- sparsity: 0.9 (target 0.9)",
        "- max_dev_drop_pp: 1.08 (target 0.5)",
    ]
    assert lines[-1] == (
        "Learned-weight sparsity 90.00%; the compressed model computes with 20,000 nonzero "
        "weights, its preprocessing map kept apart (39,200 entries): 59,200 multiply-adds "
        "per image."
    )


def test_met_targets_and_a_folded_map_say_so():
    met = {name: {**figures, "met": True} for name, figures in TARGETS.items()}
    folded = {**DEPLOYED, "preprocess_map_entries": 0, "macs_per_image": 20000}
    lines = compress_section({"sparsity": 0.9, "targets": met, "deployed": folded})
    assert lines[0] == "Compression targets: met."
    assert "folded into the first layer" in lines[-1]


def test_without_a_compress_report_the_section_says_how_to_make_one():
    assert "digits compress" in compress_section(None)[0]


def test_a_budget_target_is_shown_as_a_whole_count():
    budget = {"budget": {"target": 22000, "reached": 23456, "met": False}}
    lines = compress_section({"sparsity": 0.9, "targets": budget})
    assert lines[0] == "Compression targets: **MISSED** (budget)."
    assert "- budget: 23,456 (target 22,000)" in lines


def frontier_row(method: str, budget: int, nonzero: float, test: float) -> dict:
    spread = {"dev": test - 0.001, "dense_dev": 0.988, "test": test, "dense_test": 0.989}
    stds = {f"{name}_std": 0.0005 for name in spread}
    return {"method": method, "budget": budget, "nonzero": nonzero} | (spread | stds)


FRONTIER = {
    "rows": [
        frontier_row("recipe", 22000, 22000.0, 0.9893),
        frontier_row("recipe", 4000, 3999.7, 0.9790),
        frontier_row("shrink-eighth", 4000, 4000.0, 0.9801),
    ],
    "seeds": [0, 1, 2],
    "cpu": "Some CPU",
    "methods": {"recipe": "the recipe", "shrink-eighth": "from an eighth of the units"},
}


def test_the_frontier_section_gives_every_budget_its_spread_and_the_figure():
    lines = frontier_section(FRONTIER)
    assert "seeds 0, 1, 2 (Some CPU)" in lines[0]
    rows = [line for line in lines if line.startswith("| recipe") or line.startswith("| shrink")]
    assert rows[1] == ("| recipe | 4,000 | 4,000 | 97.80% ± 0.05 | 97.90% ± 0.05 | 98.90% ± 0.05 |")
    assert len(rows) == 3 and lines[-1] == "![size against accuracy](figures/frontier.png)"
    assert "bench/frontier.py" in frontier_section(None)[0]


def test_the_frontier_figure_draws_each_method_by_size_beside_the_published_points():
    fig = plot_frontier(FRONTIER, deployed=(21990, 0.9895))
    [ax] = fig.axes
    lines = {line.get_label(): line for line in ax.get_lines()}
    bars = {container.get_label(): container for container in ax.containers}
    assert len(bars) == 2  # one per method
    recipe = next(bar for label, bar in bars.items() if label.startswith("recipe"))[0]
    assert list(recipe.get_xdata()) == [3999.7, 22000.0]  # sorted by size
    assert list(recipe.get_ydata()) == [0.9790, 0.9893]
    assert all(name in lines for name, _, _ in PUBLISHED)
    assert list(lines["this run's deployed model"].get_xdata()) == [21990]
    assert ax.get_xscale() == "log"


ROBUSTNESS = {
    "model_version": "v",
    "clean_accuracy": 0.99,
    "mean_corruption_accuracy": 0.9,
    "worst_corruption": "fog",
    "worst_corruption_accuracy": 0.7,
    "font_accuracy": 0.95,
    "corruptions": {"fog": 0.7, "blur": 0.95, "inversion": 0.99},  # mean 0.88: the report's own
    "fonts": {"DejaVuSans": 1.0, "cmti10": 0.7},
    "handwriting_accuracy": 0.93,
    "handwriting": {
        "rare_styles": 0.8,
        "styles": {"1 stick": 1.0, "7 crossed": 0.6},
        "resolutions": {"drawn": 0.99, "8 px": 0.75},
    },
}


def test_the_robustness_section_gives_each_set_the_recorded_mean_and_the_figure():
    lines = robustness_section(ROBUSTNESS)
    text = "\n".join(lines)
    # The recorded mean (90%), not one recomputed from the three corruptions listed (88%).
    assert "mean over corruptions **90.00%** (worst: fog, 70.00%); font set **95.00%**" in text
    assert "; handwriting **93.00%**." in text
    assert (
        "Handwriting, the styles MNIST lacks: **80.00%**. Per style: 1 stick 100.00%, "
        "7 crossed 60.00%. Per resolution: drawn 99.00%, 8 px 75.00%."
    ) in lines
    table = [line for line in lines if line.startswith("|")]
    assert table[:2] == ["| set | accuracy |", "|---|---|"]
    # A row per set: clean first, each corruption in the recorded order, the font set last.
    sets = {"clean": 0.99, **ROBUSTNESS["corruptions"], "fonts": 0.95}
    assert table[2:] == [f"| {name} | {100 * value:.2f}% |" for name, value in sets.items()]
    assert "Per font: DejaVuSans 100.00%, cmti10 70.00%." in lines
    assert lines[-1] == "![robustness examples](figures/robustness.png)"


def test_without_a_robustness_report_the_section_says_how_to_make_one():
    assert "digits robustness" in robustness_section(None)[0]


def png_base64(value: int) -> str:
    buffer = io.BytesIO()
    Image.fromarray(np.full((28, 28), value, np.uint8)).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def test_the_robustness_figure_draws_each_example_titled_with_its_answer():
    examples = [
        {"set": "clean", "label": 3, "answer": 3, "confidence": 0.9, "png": png_base64(0)},
        {"set": "fog", "label": 3, "answer": 8, "confidence": 0.6, "png": png_base64(200)},
    ]
    fig = plot_robustness(examples, sets_per_row=2)
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert titles == ["clean\n3 → 3", "fog\n3 → 8 ✗"]
    drawn = [ax.get_images()[0].get_array() for ax in fig.axes if ax.get_images()]
    assert [int(image.mean()) for image in drawn] == [0, 200]  # the files' own pixels


def test_the_diagnostics_section_gives_the_verdict_its_numbers_and_the_remedy():
    run = diagnosed_run()
    lines = diagnostics_section(run)
    assert lines[0] == "Training diagnostics verdict: **dead units**."
    finding = run["train"]["diagnosis"]["findings"]["dead units"]
    assert [line for line in lines if line.startswith("- ")] == [
        f"- **dead units**: {finding['evidence']}. Try: {'; '.join(finding['remedy'])}."
    ]
    links = [re.fullmatch(r"!\[[^]]+\]\(figures/(.+)\)", line) for line in lines]
    assert [m[1] for m in links if m] == list(DIAGNOSTIC_FIGURES)  # every figure, in order
    assert "digits train" in diagnostics_section(None)[0]


def test_every_diagnostic_figure_draws_what_the_train_stage_writes():
    run = diagnosed_run()
    figures = [
        plot_gradients(run["diagnostics"]),
        plot_activations(run["diagnostics"]),
        plot_weight_histograms(run["diagnostics"]),
        plot_first_layer(run["pictures"]),
        plot_hidden_pca(run["pictures"]),
    ]
    assert [len(fig.axes) for fig in figures[:3]] == [2, 2, 3]
    assert len(figures[0].axes[0].lines) == 3  # a line per Linear layer
    assert len(figures[1].axes[1].lines) == 2  # dead share of each hidden ReLU layer
    assert sum(bool(ax.images) for ax in figures[3].axes) == 3
    assert len(figures[4].axes[0].collections) == 10  # one colour per digit
    for fig in figures:
        fig.savefig(io.BytesIO(), format="png")
