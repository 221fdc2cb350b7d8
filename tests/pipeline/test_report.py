"""The report's compression section: targets met or missed, and the deployed size, in words."""

from __future__ import annotations

from pipeline.stages.report import compress_section

TARGETS = {
    "sparsity": {"target": 0.9, "reached": 0.9, "met": True},
    "max_dev_drop_pp": {"target": 0.5, "reached": 1.08, "met": False},
}
DEPLOYED = {"weights_nonzero": 20000, "preprocess_map_entries": 39200, "macs_per_image": 59200}


def test_a_missed_target_is_a_visible_line_naming_it():
    lines = compress_section({"sparsity": 0.9, "targets": TARGETS, "deployed": DEPLOYED})
    assert lines[0] == "Compression targets: **MISSED** (max_dev_drop_pp)."
    assert "- max_dev_drop_pp: 1.08 (target 0.5)" in lines
    assert "kept apart (39,200 entries): 59,200 multiply-adds per image." in lines[-1]


def test_met_targets_and_a_folded_map_say_so():
    met = {name: {**figures, "met": True} for name, figures in TARGETS.items()}
    folded = {**DEPLOYED, "preprocess_map_entries": 0, "macs_per_image": 20000}
    lines = compress_section({"sparsity": 0.9, "targets": met, "deployed": folded})
    assert lines[0] == "Compression targets: met."
    assert "folded into the first layer" in lines[-1]


def test_without_a_compress_report_the_section_says_how_to_make_one():
    assert "digits compress" in compress_section(None)[0]
