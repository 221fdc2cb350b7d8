"""Robustness training: train and compress with augmentation settings, then the benchmark.

For each config × seed: a params file (params.yaml with `base.seed` and the config's `train:`
overrides), `digits train` then `digits compress` on --data in a scratch directory, then the
compressed checkpoint on the clean test split (pixels) and on the robustness benchmark's sets
read back through the image path as PNG files (pipeline/robustness_sets/sets.py, params
`robustness`).
The torch checkpoint stands in for its ONNX export, which the export stage checks agrees with
it (max |Δp| under 1e-5). Each finished run is appended to --out as one JSON line, so an
interrupted sweep keeps what it measured; a run already there is skipped. The compressed
checkpoints stay in checkpoints/ beside --out, to be measured again (e.g. after the image path
changes).
Run: `python bench/robust_train.py --config all --seeds 42 1 2` (two stages per run: minutes)
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as pipeline/__init__.py, torch loads first

import click
import numpy as np
import yaml

from digits.atomic import atomic_path
from digits.npz import read_split
from pipeline.analysis.classification import accuracy
from pipeline.config import load_group
from pipeline.model.network import load_checkpoint, predict_logits
from pipeline.robustness_sets.corruptions import CORRUPTIONS
from pipeline.robustness_sets.fonts import font_digits
from pipeline.robustness_sets.handwriting import handwriting_digits, rare_styles
from pipeline.robustness_sets.sets import RobustnessParams, corruption_sets, through_image_files

ROOT = Path(__file__).resolve().parents[1]
# `train:` overrides per named config; every one keeps the default affine augmentation.
CONFIGS = {
    "default": {},
    "all": {
        "augment_elastic": 34.0,
        "augment_elastic_sigma": 4.0,
        "augment_stroke": 0.5,
        "augment_blur": 0.3,
        "augment_noise": 0.3,
    },
    "elastic": {"augment_elastic": 34.0, "augment_elastic_sigma": 4.0},
    "pixel": {"augment_stroke": 0.5, "augment_blur": 0.3, "augment_noise": 0.3},
    "pixel_strong": {"augment_stroke": 0.8, "augment_blur": 0.5, "augment_noise": 0.5},
    "pixel_rot": {
        "augment_stroke": 0.5,
        "augment_blur": 0.3,
        "augment_noise": 0.3,
        "augment_degrees": 20.0,
    },
    # Handwriting from other writers (pipeline/training/styles.py), on top of the defaults.
    "styles": {"augment_styles": 0.3},
    "lowres": {"augment_lowres": 0.2},
    "writers": {"augment_styles": 0.3, "augment_lowres": 0.2},
    "styles_more": {"augment_styles": 0.6},  # twice the default's style share
}


def cpu_name() -> str:
    """The CPU model, as lscpu names it."""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def run_digits(args: list[str], cwd: Path) -> None:
    """Run a `digits` command with this checkout's code; fail loudly with its output."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "DIGITS_LOGS": str(cwd / "logs")}
    command = [sys.executable, "-c", "from digits.cli import main; main()", *args]
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    if result.returncode:
        raise click.ClickException(f"digits {args[0]} failed:\n{result.stdout}\n{result.stderr}")


def train_and_compress(params: dict, prepared: Path, work: Path) -> tuple[Path, dict]:
    """Train and compress with these params in `work`; the compressed checkpoint and its report."""
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    common = ["--params", "params.yaml", "--data", str(prepared)]
    run_digits(["train", *common, "--out", "mlp.pt", "--metrics", "train.json"], work)
    outputs = "--model mlp.pt --out mlp-compressed.pt --metrics compress.json --sweep sweep.json"
    run_digits(["compress", *common, *outputs.split()], work)
    return work / "mlp-compressed.pt", json.loads((work / "compress.json").read_text())


def benchmark_pixels(prepared: Path, params: RobustnessParams) -> dict[str, tuple]:
    """Every benchmark set as the model sees it: pixels (N, 784) after the image path, labels;
    the handwriting set's also by style and by resolution ("style NAME", "scan NAME")."""
    x, y = read_split(prepared / "test.npz")
    sets = corruption_sets(x, y, params.per_kind, params.seed)
    sets["fonts"] = font_digits(params.font_sizes)[:2]
    images, labels, styles, scans = handwriting_digits(params.writers, params.seed)
    sets["handwriting"] = (images, labels)
    with tempfile.TemporaryDirectory() as tmp:
        pixels = {
            name: (through_image_files(images, Path(tmp) / name), labels)
            for name, (images, labels) in sets.items()
        }
    hand, groups = pixels["handwriting"], {"rare_styles": np.isin(styles, rare_styles())}
    groups |= {f"style {name}": np.array(styles) == name for name in dict.fromkeys(styles)}
    groups |= {f"scan {name}": np.array(scans) == name for name in dict.fromkeys(scans)}
    return pixels | {name: (hand[0][keep], hand[1][keep]) for name, keep in groups.items()}


def measure(checkpoint: Path, test: tuple, sets: dict[str, tuple]) -> dict:
    """Clean test accuracy (pixels), each benchmark set's, the corruptions' mean."""
    model, _ = load_checkpoint(checkpoint)
    figures = {"test_accuracy": accuracy(predict_logits(model, test[0]), test[1])}
    per_set = {name: accuracy(predict_logits(model, px), y) for name, (px, y) in sets.items()}
    kinds = [name for name in per_set if name in CORRUPTIONS]
    figures["corruptions"] = {name: per_set[name] for name in kinds}
    figures["mean_corruption_accuracy"] = float(np.mean([per_set[k] for k in kinds]))
    figures["clean_image_path_accuracy"] = per_set["clean"]
    figures["font_accuracy"] = per_set["fonts"]
    figures["handwriting_accuracy"] = per_set["handwriting"]
    figures["rare_style_accuracy"] = per_set["rare_styles"]
    for group in ("style", "scan"):
        figures[f"handwriting_{group}"] = {
            name.removeprefix(f"{group} "): value
            for name, value in per_set.items()
            if name.startswith(f"{group} ")
        }
    return figures


def summary(rows: list[dict]) -> dict[str, dict[str, str]]:
    """Mean ± std over seeds of the headline figures, per config."""
    keys = ("test_accuracy", "dev_accuracy", "mean_corruption_accuracy", "font_accuracy",
            "handwriting_accuracy", "rare_style_accuracy")  # fmt: skip
    table = {}
    for config in dict.fromkeys(row["config"] for row in rows):
        runs = [row for row in rows if row["config"] == config]
        table[config] = {"seeds": [row["seed"] for row in runs]}
        for key in keys:
            values = [100 * row[key] for row in runs if key in row]
            std = statistics.stdev(values) if len(values) > 1 else 0.0
            table[config][key] = f"{statistics.mean(values):.2f} ± {std:.2f}"
    return table


@click.command()
@click.option(
    "--config",
    "configs",
    multiple=True,
    type=click.Choice(sorted(CONFIGS)),
    default=["all"],
    show_default=True,
    help="Augmentation configs to run, in order.",
)
@click.option(
    "--seeds", multiple=True, type=int, default=[42], show_default=True, help="base.seed."
)
@click.option("--data", "prepared", type=click.Path(path_type=Path), default="data/prepared")
@click.option("--out", type=click.Path(path_type=Path), default="bench/results/robust_train.jsonl")
@click.option(
    "--remeasure",
    is_flag=True,
    help="Measure the runs already in --out again from their kept checkpoints, then stop.",
)
@click.option(
    "--portable/--plain",
    default=None,
    help="base.portable for the runs (default: params.yaml's); plain is about 1.6x faster.",
)
def main(
    configs: tuple[str, ...],
    seeds: tuple[int, ...],
    prepared: Path,
    out: Path,
    portable: bool | None,
    remeasure: bool,
) -> None:
    """Train, compress and benchmark each config × seed; print mean ± std per config."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    bench = load_group(RobustnessParams, "robustness", ROOT / "params.yaml")
    test, sets = read_split(prepared / "test.npz"), benchmark_pixels(prepared, bench)
    out.parent.mkdir(parents=True, exist_ok=True)
    rows = [json.loads(line) for line in out.read_text().splitlines()] if out.exists() else []
    if remeasure:
        for row in rows:
            kept = out.parent / "checkpoints" / f"{row['config']}-{row['seed']}.pt"
            row.update(measure(kept, test, sets))
        with atomic_path(out) as tmp:
            tmp.write_text("".join(json.dumps(row) + "\n" for row in rows))
        configs = ()
    for config in configs:
        for seed in seeds:
            if any(r["config"] == config and r["seed"] == seed for r in rows):
                continue
            run = {**params, "base": {**params["base"], "seed": seed}}
            if portable is not None:
                run["base"]["portable"] = portable
            run["train"] = {**params["train"], **CONFIGS[config]}
            with tempfile.TemporaryDirectory() as work:
                checkpoint, report = train_and_compress(run, prepared.resolve(), Path(work))
                kept = out.parent / "checkpoints" / f"{config}-{seed}.pt"  # to measure again
                kept.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(checkpoint, kept)
                row = {
                    "config": config,
                    "seed": seed,
                    "train": CONFIGS[config],
                    "portable": run["base"].get("portable", False),
                    "dev_accuracy": report["dev_accuracy_after"],
                    **measure(checkpoint, test, sets),
                    "cpu": cpu_name(),
                }
            rows.append(row)
            with out.open("a") as f:
                f.write(json.dumps(row) + "\n")
            click.echo(
                f"{config} seed {seed}: test {row['test_accuracy']:.4f}, mean corruption "
                f"{row['mean_corruption_accuracy']:.4f}, fonts {row['font_accuracy']:.4f}"
            )
    click.echo(json.dumps(summary(rows), indent=1, ensure_ascii=False))


if __name__ == "__main__":
    main()
