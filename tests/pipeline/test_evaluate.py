"""The evaluate stage on tiny checkpoints: the evaluate.json contract, DVC plot files, errors."""

from __future__ import annotations

import base64
import io
import json
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from click.testing import CliRunner
from PIL import Image
from sklearn.metrics import confusion_matrix

from digits.cli import cli
from pipeline.analysis.bias_variance import diagnose
from pipeline.analysis.classification import flagged_figures, low_confidence_threshold, softmax
from pipeline.analysis.training_figures import DIAGNOSTIC_FIGURES
from pipeline.model.network import (
    MLP,
    ModelParams,
    NetSpec,
    build_mlp,
    load_checkpoint,
    predict_logits,
    save_checkpoint,
)
from pipeline.model.transform import AffineTransform
from pipeline.stages.evaluate import SPLITS, EvaluateParams
from pipeline.training.loop import fit
from pipeline.training.params import TrainParams
from tests.conftest import make_digits
from tests.pipeline.conftest import diagnosed_run

IMAGE_LINK = re.compile(r"!\[[^]]*\]\(([^)]+)\)")  # a Markdown image's target


def write_prepared(directory: Path) -> Path:
    """Tiny train/dev/test splits (different seeds) and a /255 transform, as prepare writes."""
    directory.mkdir(parents=True)
    for name, n, seed in (("train", 300, 1), ("dev", 100, 2), ("test", 120, 3)):
        x, y = make_digits(n, seed)
        np.savez(directory / f"{name}.npz", x=x.reshape(n, -1), y=y.astype(np.int64))
    AffineTransform(np.zeros(784, np.float32), np.eye(784, dtype=np.float32) / 255).save(
        directory / "transform.npz"
    )
    return directory


def write_models(directory: Path, prepared: Path) -> dict[str, Path]:
    """A briefly trained dense MLP and an untrained folded-style one (no BN, no preprocess)."""
    torch.manual_seed(0)
    transform = AffineTransform.load(prepared / "transform.npz")
    dense = build_mlp(ModelParams(hidden=(32,), dropout=0.0), transform)
    with np.load(prepared / "train.npz") as f:
        train = (f["x"], f["y"])
    fit(dense, train, train, TrainParams(epochs=2, batch_size=32, schedule="constant"))
    spec = NetSpec(784, (16,), "relu", 0.01, 2, False, (0.0,), preprocess=False)
    paths = {"dense": directory / "mlp.pt", "compressed": directory / "mlp-compressed.pt"}
    save_checkpoint(paths["dense"], dense)
    save_checkpoint(paths["compressed"], MLP(spec))
    return paths


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Prepared splits, two checkpoints and a params file with a small evaluate group."""
    root = tmp_path_factory.mktemp("evaluate")
    prepared = write_prepared(root / "prepared")
    paths = write_models(root / "models", prepared)
    params = {"base": {"seed": 0}, "evaluate": {"worst_errors": 6, "calibration_bins": 10}}
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    return {"root": root, "prepared": prepared, "params": root / "params.yaml", **paths}


def evaluate(ws: dict[str, Path], out: Path, **override: Path):
    """Run `digits evaluate` into `out`; return the CliRunner result."""
    paths = {"dense": ws["dense"], "compressed": ws["compressed"], **override}
    args = ["evaluate", "--params", ws["params"], "--data", ws["prepared"]]
    args += ["--dense", paths["dense"], "--compressed", paths["compressed"]]
    args += ["--out", out / "evaluate", "--metrics", out / "evaluate.json"]
    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.fixture(scope="module")
def evaluated(workspace: dict[str, Path]) -> Path:
    """The output directory of one successful `digits evaluate`."""
    out = workspace["root"] / "reports"
    result = evaluate(workspace, out)
    assert result.exit_code == 0, result.output
    assert "dense: error train" in result.output
    return out


def torch_predictions(path: Path, x: np.ndarray) -> np.ndarray:
    """The oracle: argmax of the checkpoint's forward pass, straight from torch."""
    payload = torch.load(path, weights_only=True)
    spec = payload["spec"]
    model = MLP(NetSpec(**{**spec, "hidden": tuple(spec["hidden"]), "dropout": (0.0,)}))
    model.load_state_dict(payload["state_dict"])
    with torch.no_grad():
        return model.eval()(torch.from_numpy(x).float()).argmax(1).numpy()


def test_evaluate_json_holds_the_contract_and_agrees_with_torch(workspace, evaluated):
    summary = json.loads((evaluated / "evaluate.json").read_text(), parse_constant=float.__call__)
    for name in ("dense", "compressed"):
        for split in SPLITS:
            with np.load(workspace["prepared"] / f"{split}.npz") as f:
                x, y = f["x"], f["y"]
            expected = float(np.mean(torch_predictions(workspace[name], x) == y))
            assert summary[name][f"{split}_accuracy"] == pytest.approx(expected)
            assert summary[name][f"{split}_error"] == pytest.approx(1 - expected)
        errors = [summary[name][f"{split}_error"] for split in SPLITS]
        assert summary["diagnosis"][name] == diagnose(*errors, EvaluateParams())
    assert summary["dense"]["train_accuracy"] > 0.9  # the trained one learned the fixture
    assert summary["compressed"]["test_accuracy"] < 0.5  # the untrained one did not


def test_confusion_plot_rows_are_the_test_predictions(workspace, evaluated):
    with np.load(workspace["prepared"] / "test.npz") as f:
        x, y = f["x"], f["y"]
    for name in ("dense", "compressed"):
        rows = json.loads((evaluated / "evaluate" / f"confusion_{name}.json").read_text())
        predicted = torch_predictions(workspace[name], x)
        assert Counter((r["actual"], r["predicted"]) for r in rows) == Counter(
            zip(y.tolist(), predicted.tolist(), strict=True)
        )
        detail = json.loads((evaluated / "evaluate" / "detail.json").read_text())[name]
        np.testing.assert_array_equal(
            detail["test"]["confusion"], confusion_matrix(y, predicted, labels=range(10))
        )


def test_calibration_points_cover_the_test_set_and_worst_errors_are_wrong(workspace, evaluated):
    with np.load(workspace["prepared"] / "test.npz") as f:
        x, y = f["x"], f["y"]
    detail = json.loads((evaluated / "evaluate" / "detail.json").read_text())
    for name in ("dense", "compressed"):
        points = json.loads((evaluated / "evaluate" / f"calibration_{name}.json").read_text())
        assert sum(p["count"] for p in points) == len(y)
        assert all(0 <= p["accuracy"] <= 1 and 0.1 <= p["confidence"] <= 1 for p in points)
        worst = detail[name]["worst_errors"]
        assert len(worst) == min(6, np.sum(torch_predictions(workspace[name], x) != y))
        assert all(w["label"] == y[w["index"]] != w["predicted"] for w in worst)
        confidences = [w["confidence"] for w in worst]
        assert confidences == sorted(confidences, reverse=True)


def test_missing_checkpoint_fails_in_one_line_and_writes_nothing(workspace, tmp_path):
    result = evaluate(workspace, tmp_path, compressed=tmp_path / "absent.pt")
    assert result.exit_code == 2
    assert "does not exist" in result.output and "Traceback" not in result.output
    assert list(tmp_path.iterdir()) == []


def test_corrupt_checkpoint_fails_in_one_line_and_writes_nothing(workspace, tmp_path):
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"not a checkpoint")
    result = evaluate(workspace, tmp_path / "out", compressed=broken)
    assert result.exit_code == 1
    assert "is not a digits checkpoint" in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_bad_evaluate_param_names_the_key(workspace, tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"evaluate": {"worst_errors": -1}}))
    result = evaluate({**workspace, "params": params}, tmp_path / "out")
    assert result.exit_code == 1
    assert "evaluate.worst_errors" in result.output
    assert not (tmp_path / "out").exists()


def report(reports: Path, prepared: Path, band: dict | None = None):
    """Run `digits report` on a reports directory (params: `band` as the report group)."""
    params = reports.parent / "report-params.yaml"
    params.write_text(yaml.safe_dump({"report": band or {}}))
    args = ["report", "--params", str(params), "--reports", str(reports), "--data", str(prepared)]
    return CliRunner().invoke(cli, args)


@pytest.fixture
def reports(evaluated: Path, tmp_path: Path) -> Path:
    """A private copy of the evaluate outputs, so report tests can add and remove files."""
    import shutil

    copy = tmp_path / "reports"
    shutil.copytree(evaluated, copy)
    return copy


def test_report_links_figures_that_exist_and_shows_the_figures(workspace, reports):
    from PIL import Image

    curve = [
        {"fraction": 0.5, "train_size": 150, "epochs": 2, "train_error": 0.0, "dev_error": 0.2},
        {"fraction": 1.0, "train_size": 300, "epochs": 1, "train_error": 0.01, "dev_error": 0.1},
    ]
    (reports / "learning_curve.json").write_text(json.dumps(curve))
    result = report(reports, workspace["prepared"])
    assert result.exit_code == 0, result.output
    markdown = (reports / "report.md").read_text()
    links = IMAGE_LINK.findall(markdown)
    assert sorted(Path(link).name for link in links) == [
        "confusion.png",
        "learning_curve.png",
        "reliability.png",
        "worst_errors.png",
    ]
    for link in links:
        with Image.open(reports / link) as image:
            assert image.format == "PNG" and min(image.size) >= 300
    summary = json.loads((reports / "evaluate.json").read_text())
    test_accuracy = 100 * summary["compressed"]["test_accuracy"]
    assert f"{test_accuracy:.2f}%" in markdown
    assert f"**{summary['diagnosis']['compressed']['verdict']}**" in markdown
    assert "| 300 | 1 | 1.00% | 10.00% |" in markdown


def test_report_draws_the_train_stages_diagnostics_and_pictures(workspace, reports):
    from PIL import Image

    run = diagnosed_run()
    (reports / "train").mkdir()
    (reports / "train.json").write_text(json.dumps(run["train"]))
    for name in ("diagnostics", "pictures"):
        (reports / "train" / f"{name}.json").write_text(json.dumps(run[name]))
    result = report(reports, workspace["prepared"])
    assert result.exit_code == 0, result.output
    markdown = (reports / "report.md").read_text()
    assert "Training diagnostics verdict: **dead units**." in markdown
    links = {Path(link).name for link in IMAGE_LINK.findall(markdown)}
    assert set(DIAGNOSTIC_FIGURES) <= links
    for name in DIAGNOSTIC_FIGURES:
        with Image.open(reports / "figures" / name) as image:
            assert image.format == "PNG"


REPORT_SECTIONS = {  # in report order: each section and the figures it shows
    "Metrics": [],
    "Compression": [],
    "Size against accuracy": ["frontier.png"],
    "This run against the seed band": [],
    "Bias and variance": [],
    "Learning curve": ["learning_curve.png"],
    "Inside the network (dense model, training)": list(DIAGNOSTIC_FIGURES),
    "Confusion matrices (test)": ["confusion.png"],
    "Per-class scores (test)": [],
    "Calibration (test)": ["reliability.png"],
    "Worst errors (compressed model, test)": ["worst_errors.png"],
    "Robustness (deployed model, image files)": ["robustness.png"],
}


def add_every_optional_input(reports: Path) -> None:
    """What the stages besides evaluate write, so the report draws every section and figure."""
    curve = [
        {"fraction": 0.5, "train_size": 150, "epochs": 2, "train_error": 0.0, "dev_error": 0.2},
        {"fraction": 1.0, "train_size": 300, "epochs": 1, "train_error": 0.01, "dev_error": 0.1},
    ]
    (reports / "learning_curve.json").write_text(json.dumps(curve))
    run = diagnosed_run()
    (reports / "train").mkdir()
    (reports / "train.json").write_text(json.dumps(run["train"]))
    for name in ("diagnostics", "pictures"):
        (reports / "train" / f"{name}.json").write_text(json.dumps(run[name]))
    targets = {"sparsity": {"target": 0.9, "reached": 0.91, "met": True}}
    deployed = {"weights_nonzero": 2000, "preprocess_map_entries": 0, "macs_per_image": 2000}
    compressed = {
        "sparsity": 0.91,
        "targets": targets,
        "deployed": deployed | {"nonzero_total": 2000},
    }
    (reports / "compress.json").write_text(json.dumps(compressed))
    figures = {"nonzero": 2000.0, "dev": 0.9, "dense_dev": 0.95, "test": 0.91, "dense_test": 0.96}
    row = {"method": "recipe", "budget": 2000, **figures, **{f"{k}_std": 0.01 for k in figures}}
    frontier = {"rows": [row], "seeds": [0, 1, 2], "cpu": "a CPU", "methods": {"recipe": "r"}}
    (reports / "frontier.json").write_text(json.dumps(frontier))
    robustness = {
        "model_version": "v", "clean_accuracy": 0.99, "mean_corruption_accuracy": 0.9,
        "worst_corruption": "fog", "worst_corruption_accuracy": 0.9, "font_accuracy": 0.95,
        "corruptions": {"fog": 0.9}, "fonts": {"DejaVuSans": 0.95},
        "handwriting_accuracy": 0.97,
        "handwriting": {"rare_styles": 0.9, "styles": {"7 crossed": 0.9},
                        "resolutions": {"8 px": 0.9}},
    }  # fmt: skip
    (reports / "robustness.json").write_text(json.dumps(robustness))
    png = io.BytesIO()
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(png, format="PNG")
    drawn = base64.b64encode(png.getvalue()).decode()
    examples = [
        {"set": name, "label": 1, "answer": 1, "confidence": 0.9, "png": drawn}
        for name in ("clean", "fog")
    ]
    (reports / "robustness").mkdir()
    (reports / "robustness" / "examples.json").write_text(json.dumps(examples))


def sections(markdown: str) -> dict[str, str]:
    """The report's `## ` sections by heading, in order, each with its text."""
    parts = re.split(r"^## (.+)$", markdown, flags=re.M)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


def test_report_has_every_section_in_order_each_linking_the_figures_drawn_for_it(
    workspace, reports
):
    add_every_optional_input(reports)
    result = report(reports, workspace["prepared"])
    assert result.exit_code == 0, result.output
    markdown = (reports / "report.md").read_text()
    assert markdown.startswith("# digits: evaluation report\n")
    found = sections(markdown)
    assert list(found) == list(REPORT_SECTIONS)
    for heading, text in found.items():
        links = IMAGE_LINK.findall(text)
        assert links == [f"figures/{name}" for name in REPORT_SECTIONS[heading]], heading
        assert "Not computed" not in text, heading  # every input was there
    drawn = sorted(path.name for path in (reports / "figures").iterdir())
    assert drawn == sorted(name for names in REPORT_SECTIONS.values() for name in names)
    for name in drawn:
        with Image.open(reports / "figures" / name) as image:
            assert image.format == "PNG" and min(image.size) >= 100, name
            low, high = image.convert("L").getextrema()
            assert high - low > 100, name  # something is drawn on it


def table(text: str) -> list[list[str]]:
    """The rows of the first Markdown table in text (header and rule skipped), cells stripped."""
    rows = [line for line in text.splitlines() if line.startswith("|")]
    return [[cell.strip() for cell in row.strip("|").split("|")] for row in rows[2:]]


def share(cell: str) -> float:
    """'12.34%' -> 0.1234 ('nan%' -> nan)."""
    assert cell.endswith("%"), cell
    return float(cell[:-1]) / 100


def test_report_figures_are_the_evaluate_json_values(workspace, reports):
    result = report(reports, workspace["prepared"])
    assert result.exit_code == 0, result.output
    markdown = (reports / "report.md").read_text()
    read = json.loads((reports / "evaluate.json").read_text(), parse_constant=float.__call__)
    detail = json.loads((reports / "evaluate/detail.json").read_text(), parse_constant=float)
    found = sections(markdown)
    close = {"abs": 5e-5, "nan_ok": True}  # two decimals of a percentage, four of a number
    metrics = table(found["Metrics"])
    assert [row[0] for row in metrics] == ["dense", "compressed"]
    for name, *cells in metrics:
        m = read[name]
        splits = [m[f"{s}_accuracy"] for s in ("train", "dev", "test")]
        assert [share(c) for c in cells[:3]] == pytest.approx(splits, **close)
        test = [m["test_loss"], m["test_macro_f1"], m["test_ece"]]
        assert [float(c) for c in cells[3:]] == pytest.approx(test, **close)
    for name, *cells in table(found["Bias and variance"]):
        m, d = read[name], read["diagnosis"][name]
        errors = [m[f"{s}_error"] for s in ("train", "dev", "test")]
        gaps = [d[k] for k in ("avoidable_bias", "variance", "dev_test_gap")]
        assert [share(c) for c in cells[:6]] == pytest.approx(errors + gaps, **close)
        assert cells[6] == f"**{d['verdict']}**"
    per_class = table(found["Per-class scores (test)"])
    assert [int(row[0]) for row in per_class] == list(range(10))
    for digit, support, *cells in per_class:
        scores = [detail[name]["test"]["per_class"] for name in ("dense", "compressed")]
        assert int(support) == scores[0]["support"][int(digit)]
        expected = [s[k][int(digit)] for s in scores for k in ("precision", "recall", "f1")]
        assert [float(c) for c in cells] == pytest.approx(expected, **close)
    headline = re.search(r"classifies (\S+) of the 10,000 .* verdict is \*\*(.+)\*\*", markdown)
    compressed = read["compressed"]["test_accuracy"], read["diagnosis"]["compressed"]["verdict"]
    assert share(headline[1]) == pytest.approx(compressed[0], **close)
    assert headline[2] == compressed[1]


def test_report_places_this_run_in_the_seed_band(workspace, reports):
    summary = json.loads((reports / "evaluate.json").read_text())
    dense = summary["dense"]["test_accuracy"]
    band = {"seeds": [4, 5, 6], "dense_test": [dense - 0.003, 0.002]}
    result = report(reports, workspace["prepared"], band)
    assert result.exit_code == 0, result.output
    markdown = (reports / "report.md").read_text()
    assert f"- dense: test {100 * dense:.2f}%; over seeds 4, 5, 6 it was" in markdown
    assert "± 0.20 pp, so this run is +1.5 std from the mean (inside ±2 std)." in markdown
    assert "- compressed:" not in markdown  # no band recorded for it
    far = {"seeds": [4], "compressed_test": [summary["compressed"]["test_accuracy"] + 0.05, 0.01]}
    assert report(reports, workspace["prepared"], far).exit_code == 0
    assert "-5.0 std from the mean (OUTSIDE ±2 std)" in (reports / "report.md").read_text()


def test_report_without_a_seed_band_says_one_run_is_no_claim(workspace, reports):
    assert report(reports, workspace["prepared"]).exit_code == 0
    assert "No seed band recorded" in (reports / "report.md").read_text()


def test_report_without_a_learning_curve_says_how_to_make_one(workspace, reports):
    result = report(reports, workspace["prepared"])
    assert result.exit_code == 0, result.output
    markdown = (reports / "report.md").read_text()
    assert "digits learning-curve" in markdown and "learning_curve.png" not in markdown
    assert not (reports / "figures" / "learning_curve.png").exists()


def test_report_rejects_foreign_json_in_one_line_and_writes_nothing(workspace, reports):
    (reports / "evaluate.json").write_text("{}")
    result = report(reports, workspace["prepared"])
    assert result.exit_code == 1
    assert "not what `digits evaluate` writes" in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not (reports / "report.md").exists() and not (reports / "figures").exists()


def test_evaluate_refuses_an_out_directory_holding_foreign_files(workspace, tmp_path):
    (tmp_path / "evaluate").mkdir()
    (tmp_path / "evaluate" / "notes.md").write_text("mine")
    result = evaluate(workspace, tmp_path)
    assert result.exit_code == 1
    assert "holds files digits evaluate did not write (notes.md)" in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert sorted(p.name for p in (tmp_path / "evaluate").iterdir()) == ["notes.md"]
    assert not (tmp_path / "evaluate.json").exists()


def test_report_refuses_figures_holding_foreign_files_and_writes_nothing(workspace, reports):
    (reports / "figures").mkdir()
    (reports / "figures" / "logo.svg").write_text("<svg/>")
    result = report(reports, workspace["prepared"])
    assert result.exit_code == 1
    assert "holds files digits report did not write (logo.svg)" in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert sorted(p.name for p in (reports / "figures").iterdir()) == ["logo.svg"]
    assert not (reports / "report.md").exists()


def test_low_confidence_threshold_is_chosen_on_dev_and_its_figures_hold_on_each_split(
    workspace, evaluated
):
    summary = json.loads((evaluated / "evaluate.json").read_text(), parse_constant=float.__call__)
    detail = json.loads((evaluated / "evaluate" / "detail.json").read_text())
    for name in ("dense", "compressed"):
        flags = detail[name]["low_confidence"]
        model = load_checkpoint(workspace[name])[0]
        probs = {}
        for split in SPLITS:
            with np.load(workspace["prepared"] / f"{split}.npz") as f:
                x, y = f["x"], f["y"]
            probs[split] = softmax(predict_logits(model, x).astype(np.float64))
            expected = flagged_figures(probs[split], y, flags["threshold"])
            assert flags[split] == pytest.approx(expected, nan_ok=True)
            if split == "dev":
                rule = EvaluateParams().flag_accuracy
                assert flags["threshold"] == low_confidence_threshold(probs[split], y, rule)
        assert summary[name]["confidence_threshold"] == flags["threshold"]
        assert summary[name]["test_flagged_share"] == flags["test"]["flagged_share"]
