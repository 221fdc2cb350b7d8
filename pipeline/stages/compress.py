"""Stage `compress`: shrink, prune and fold the dense MLP, checking dev accuracy at every step.

Reads: models/mlp.pt, data/prepared/{train,dev}.npz, params.yaml `base`, `train`, `compress`.
Writes: models/mlp-compressed.pt (pruned, BN- and preprocessing-folded checkpoint),
reports/compress.json (learned-weight sparsity, accuracy per step, per-layer detail, folding
errors, the size of what is deployed, whether the targets were met),
logs/compress.json (seconds),
reports/compress-sweep.json (dev accuracy vs sparsity of one-shot magnitude pruning, a plot).
Run: `digits compress`

The recipe, in order (a step whose param is 0 is skipped):
1. structured: remove `structured_fraction` of each hidden layer's units, fine-tune;
2. l1: fine-tune with an L1 penalty, so the prune steps find many weights already near 0;
3. prune: magnitude-prune to `sparsity` of the remaining Linear weights in `steps` rising
   steps, fine-tuning with the masks fixed after each (`step_epochs`, `final_epochs` after the
   last step: Han et al. 2015); `scope` ranks weights across all layers (global), within each
   (layer), or gives each layer its own share by measured sensitivity (sensitivity);
4. polish: fine-tune `polish_epochs` at `polish_lr` without augmentation, masks fixed;
5. fold BatchNorm, then the fixed preprocessing map, into the Linears; the map is folded only
   when that makes the model smaller (a PCA/ZCA map would make a pruned first layer dense), and
   each fold is checked on dev.
Fine-tuning is `pipeline.training.loop.fit` with the `train:` params, less `epochs`, `lr` and `l1`.
Pruning acts on the learned weights only, so `sparsity` is learned-weight sparsity; `budget`
(nonzero weights of the deployed graph) raises it where the weights left after step 1 would not
fit. A run that misses `sparsity`, `max_dev_drop` or `budget` says so (and fails, writing
nothing, with `strict`).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import click
import numpy as np

from digits.atomic import write_json
from pipeline.analysis import classification
from pipeline.compression.folding import (
    fold_batchnorm,
    fold_preprocess_if_smaller,
    has_batchnorm,
    max_logit_diff,
    mixes_pixels,
    unmix_preprocess,
)
from pipeline.compression.pruning import (
    allocate_sparsity,
    count_below,
    input_scales,
    layer_sensitivity,
    plain_copy,
    prune_layers,
    prune_magnitude,
    sparsity_schedule,
)
from pipeline.compression.shrink import shrink_hidden
from pipeline.compression.size import deployed_size, layer_summary, model_summary
from pipeline.config import BaseParams, begin_stage, load_group, require
from pipeline.model.network import MLP, load_checkpoint, predict_logits, save_checkpoint
from pipeline.options import params_option, path_option, prepared_option
from pipeline.run_log import write_run_log
from pipeline.training.loop import Data, fit, load_data
from pipeline.training.params import TrainParams

PruneScope = Literal["global", "layer", "sensitivity"]
Importance = Literal["auto", "magnitude", "input_scaled"]
CALIBRATION = 4096  # train images whose activations give input_scaled its input scales
# Learned-weight sparsity may fall short of the target by rounding alone (per layer, per step).
SPARSITY_TOLERANCE = 1e-3


@dataclass(frozen=True)
class CompressParams:
    """params.yaml `compress:` group."""

    structured_fraction: float = 0.5  # share of each hidden layer's units removed
    structured_epochs: int = 4
    l1: float = 1e-5  # L1 coefficient of the L1 fine-tune
    l1_epochs: int = 1
    l1_threshold: float = 1e-3  # |w| below this counts as driven to zero by the penalty
    sparsity: float = 0.9  # target zero share of the Linear weights left after step 1
    # Nonzero weights the deployed graph may hold, every weight matrix counted (a kept
    # preprocessing map too); None: no budget. Pruning goes past `sparsity` when the learned
    # weights left after step 1 would not fit in it.
    budget: int | None = None
    scope: PruneScope = "global"
    sensitivity_levels: tuple[float, ...] = (0.5, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99)
    max_dev_drop: float = 0.5  # percentage points of dev accuracy the whole recipe may cost
    strict: bool = False  # fail (writing nothing) when a target is missed, instead of warning
    steps: int = 4
    step_epochs: int = 3
    final_epochs: int = 8  # fine-tune epochs after the last prune step, where most is lost
    lr: float = 1e-3  # peak lr of each fine-tune
    polish_epochs: int = 2  # last fine-tune, on the unaugmented images: +5 dev images on MNIST
    polish_lr: float = 3e-4
    sweep: tuple[float, ...] = (0.5, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99)
    # PCA/ZCA: fold the mixing into the first Linear before any step (a global-std scale stays
    # in front), so the recipe prunes pixel weights and no dense map is deployed; false: prune
    # in the whitened basis and fold the map afterwards only if that is smaller.
    unmix_whitening: bool = True
    # magnitude: rank weights by |w|; input_scaled: within each layer (its share as |w| ranks
    # globally), by |w| times the std of the input it multiplies (Wanda, Sun et al. 2023);
    # auto: input_scaled when a whitening map was unmixed (its weights sit on pixels whose
    # scale the map changed), else magnitude.
    importance: Importance = "auto"

    def __post_init__(self) -> None:
        require(0 <= self.structured_fraction < 1, "compress.structured_fraction", "not in [0, 1)")
        for key in (
            "structured_epochs",
            "l1_epochs",
            "step_epochs",
            "final_epochs",
            "polish_epochs",
        ):
            require(getattr(self, key) >= 0, f"compress.{key}", "must be >= 0")
        require(self.l1 >= 0, "compress.l1", "must be >= 0")
        require(self.l1_threshold > 0, "compress.l1_threshold", "must be > 0")
        require(0 <= self.sparsity < 1, "compress.sparsity", "must be in [0, 1)")
        require(self.budget is None or self.budget >= 1, "compress.budget", "must be >= 1 or null")
        require(self.steps >= 1, "compress.steps", "must be >= 1")
        require(self.lr > 0, "compress.lr", "must be > 0")
        require(self.polish_lr > 0, "compress.polish_lr", "must be > 0")
        require(all(0 <= s < 1 for s in self.sweep), "compress.sweep", "levels must be in [0, 1)")
        levels = self.sensitivity_levels
        require(
            len(levels) >= 1 and all(0 < s < 1 for s in levels) and list(levels) == sorted(levels),
            "compress.sensitivity_levels",
            "must be rising levels in (0, 1)",
        )
        require(self.max_dev_drop >= 0, "compress.max_dev_drop", "must be >= 0")


@dataclass(frozen=True)
class Tuning:
    """What every fine-tune shares: the data, the train params, the seed."""

    train: Data
    dev: Data
    params: TrainParams
    seed: int
    log: Callable[[dict], None] | None = None  # called with each fine-tune epoch's figures


def fine_tune(model: MLP, tuning: Tuning, epochs: int, lr: float, l1: float = 0.0) -> None:
    """Train in place for `epochs` (masks stay fixed); no early stopping."""
    if epochs:
        params = dataclasses.replace(
            tuning.params, epochs=epochs, lr=lr, l1=l1, early_stopping="none"
        )
        fit(model, tuning.train, tuning.dev, params, seed=tuning.seed, log=tuning.log)


def dev_accuracy(model: MLP, dev: Data) -> float:
    """Accuracy on the dev split."""
    return classification.accuracy(predict_logits(model, dev[0]), dev[1])


def step_row(name: str, model: MLP, dev: Data, before: float, cut: float | None) -> dict:
    """One step's figures: dev accuracy before it, right after the cut, after fine-tuning."""
    summary = model_summary(model)
    del summary["layers"]
    row = {"step": name, "dev_accuracy_before": before}
    if cut is not None:
        row["dev_accuracy_pruned"] = cut
    return {**row, "dev_accuracy_after": dev_accuracy(model, dev), **summary}


def structured_step(model: MLP, tuning: Tuning, params: CompressParams) -> tuple[MLP, dict]:
    """Remove the weakest hidden units and fine-tune; return the narrower model and its row."""
    before = dev_accuracy(model, tuning.dev)
    shrunk = shrink_hidden(model, params.structured_fraction)
    cut = dev_accuracy(shrunk, tuning.dev)
    fine_tune(shrunk, tuning, params.structured_epochs, params.lr)
    row = step_row("structured", shrunk, tuning.dev, before, cut)
    units = sum(model.spec.hidden)
    row["units_removed_fraction"] = (units - sum(shrunk.spec.hidden)) / units if units else 0.0
    return shrunk, row


def l1_step(model: MLP, tuning: Tuning, params: CompressParams) -> dict:
    """Fine-tune with the L1 penalty; count the weights it pushed under the threshold."""
    before = dev_accuracy(model, tuning.dev)
    below = count_below(model, params.l1_threshold)
    fine_tune(model, tuning, params.l1_epochs, params.lr, params.l1)
    row = step_row("l1", model, tuning.dev, before, None)
    after = count_below(model, params.l1_threshold)
    row.update(l1_below_threshold_before=below, l1_below_threshold_after=after)
    row["l1_pushed_below_threshold"] = after - below
    return row


def sensitivity_step(model: MLP, dev: Data, params: CompressParams) -> dict:
    """Dev drop of pruning each layer alone at each level, and the per-layer shares it implies."""
    levels = params.sensitivity_levels
    drops = layer_sensitivity(model, lambda m: dev_accuracy(m, dev), levels)
    sizes = [linear.weight.numel() for linear in model.linears()]
    shares = allocate_sparsity(levels, drops, sizes, params.sparsity)
    names = [row["layer"] for row in layer_summary(model)]
    return {
        "levels": list(levels),
        "dev_drop": dict(zip(names, drops, strict=True)),
        "allocation": dict(zip(names, shares, strict=True)),
    }


def prune_steps(
    model: MLP,
    tuning: Tuning,
    params: CompressParams,
    shares: list[float] | None = None,
    scaled: bool = False,
) -> list[dict]:
    """Iterative magnitude pruning to the target sparsity, fine-tuning after each step.

    With `shares` (one target per Linear), each layer follows its own rising schedule.
    """
    rows = []
    schedules = [sparsity_schedule(share, params.steps) for share in shares or []]
    for k, target in enumerate(sparsity_schedule(params.sparsity, params.steps), 1):
        before = dev_accuracy(model, tuning.dev)
        scales = input_scales(model, tuning.train[0][:CALIBRATION]) if scaled else None
        if shares is None:
            prune_magnitude(model, target, params.scope, scales)
        else:
            prune_layers(model, [schedule[k - 1] for schedule in schedules], scales)
        cut = dev_accuracy(model, tuning.dev)
        epochs = params.final_epochs if k == params.steps else params.step_epochs
        fine_tune(model, tuning, epochs, params.lr)
        rows.append(step_row(f"prune_{k}", model, tuning.dev, before, cut))
    return rows


def polish_step(model: MLP, tuning: Tuning, params: CompressParams) -> dict:
    """Fine-tune at a low lr on the images as they are: augmentation is for learning, not fit."""
    before = dev_accuracy(model, tuning.dev)
    plain = dataclasses.replace(tuning.params, augment=False)
    fine_tune(
        model, dataclasses.replace(tuning, params=plain), params.polish_epochs, params.polish_lr
    )
    return step_row("polish", model, tuning.dev, before, None)


def fold(model: MLP, dev: Data) -> tuple[MLP, dict]:
    """Fold BatchNorm, then preprocessing if smaller; max |Δlogit| of each fold, dev accuracy."""
    unfolded = plain_copy(model).eval()
    no_bn = fold_batchnorm(unfolded)
    folded, preprocess = fold_preprocess_if_smaller(no_bn)
    return folded, {
        "batchnorm_max_abs_logit_diff": max_logit_diff(unfolded, no_bn, dev[0]),
        "preprocess_max_abs_logit_diff": max_logit_diff(no_bn, folded, dev[0]),
        "total_max_abs_logit_diff": max_logit_diff(unfolded, folded, dev[0]),
        "dev_accuracy_before": dev_accuracy(unfolded, dev),
        "dev_accuracy_after": dev_accuracy(folded, dev),
        "batchnorm_left": has_batchnorm(folded),
        "preprocess_left": folded.spec.preprocess,
        "preprocess": preprocess,
    }


def learned_sparsity(model: MLP) -> dict:
    """Zero share of the learned Linear weights (the fixed preprocessing map not folded in)."""
    layers = layer_summary(model)  # masks applied; no copy, so no draw from torch's RNG
    weights = sum(row["weights"] for row in layers)
    nonzero = sum(row["nonzero"] for row in layers)
    return {
        "sparsity": 1 - nonzero / weights,
        "learned_weights": weights,
        "learned_nonzero": nonzero,
    }


def budget_sparsity(model: MLP, params: CompressParams) -> float:
    """The prune target: `sparsity`, or more where the learned weights must fit the budget."""
    if params.budget is None:
        return params.sparsity
    weights = sum(linear.weight.numel() for linear in model.linears())
    return max(params.sparsity, 1 - min(params.budget, weights) / weights)


def check_targets(report: dict, params: CompressParams) -> dict:
    """Whether the run reached its sparsity and stayed within its dev-drop and size budgets."""
    sparsity_met = report["sparsity"] >= params.sparsity - SPARSITY_TOLERANCE
    drop_met = report["dev_accuracy_drop_pp"] <= params.max_dev_drop
    targets = {
        "sparsity": {"target": params.sparsity, "reached": report["sparsity"], "met": sparsity_met},
        "max_dev_drop_pp": {
            "target": params.max_dev_drop,
            "reached": report["dev_accuracy_drop_pp"],
            "met": drop_met,
        },
    }
    if params.budget is not None:
        size = report["deployed"]["nonzero_total"]
        targets["budget"] = {"target": params.budget, "reached": size, "met": size <= params.budget}
    return targets


def missed_targets(report: dict) -> str:
    """One line naming each missed target, or "" when all were met."""

    def shown(value: float) -> str:
        return f"{value:,}" if isinstance(value, int) else f"{value:.4g}"

    missed = [
        f"{name} {shown(figures['reached'])} (target {shown(figures['target'])})"
        for name, figures in report["targets"].items()
        if not figures["met"]
    ]
    return "; ".join(missed)


def sweep(dense: MLP, dev: Data, levels: tuple[float, ...], scope: PruneScope) -> list[dict]:
    """Dev accuracy of the dense model one-shot magnitude-pruned to each level (no tuning)."""
    rows = []
    for level in levels:
        pruned = plain_copy(dense).eval()
        # One-shot sensitivity allocation per level would cost a sweep per level: rank globally.
        prune_magnitude(pruned, level, "global" if scope == "sensitivity" else scope)
        rows.append({"sparsity": level, "dev_accuracy": dev_accuracy(pruned, dev)})
    return rows


def compress(dense: MLP, tuning: Tuning, params: CompressParams) -> tuple[MLP, dict]:
    """Run the recipe on a copy of the dense model; return the folded model and the report."""
    model, steps = plain_copy(dense), []
    unmix = params.unmix_whitening and mixes_pixels(model)
    if unmix:  # prune pixel weights: no dense map left in front of a sparse first layer
        model = unmix_preprocess(model, 1 / float(np.std(tuning.train[0])))
    importance = params.importance
    if importance == "auto":
        importance = "input_scaled" if unmix else "magnitude"
    scaled = importance == "input_scaled"
    if params.structured_fraction and dense.spec.hidden:
        model, row = structured_step(model, tuning, params)
        steps.append(row)
    if params.l1 and params.l1_epochs:
        steps.append(l1_step(model, tuning, params))
    # the budget counts the units step 1 left: the prune steps aim at its sparsity
    params = dataclasses.replace(params, sparsity=budget_sparsity(model, params))
    sensitivity = None
    if params.sparsity and params.scope == "sensitivity":
        sensitivity = sensitivity_step(model, tuning.dev, params)
        shares = list(sensitivity["allocation"].values())
        steps.extend(prune_steps(model, tuning, params, shares, scaled))
    elif params.sparsity:
        steps.extend(prune_steps(model, tuning, params, scaled=scaled))
    if params.polish_epochs:
        steps.append(polish_step(model, tuning, params))
    folded, folding = fold(model, tuning.dev)
    before, after = dev_accuracy(dense, tuning.dev), dev_accuracy(folded, tuning.dev)
    summary = model_summary(folded)
    del summary["sparsity"]  # of the folded weights: a folded PCA/ZCA map would count as learned
    dense_summary = model_summary(dense)
    del dense_summary["layers"]
    report = {
        **learned_sparsity(model),
        "dev_accuracy_before": before,
        "dev_accuracy_after": after,
        "dev_accuracy_drop_pp": 100 * (before - after),
        **summary,
        "compression_ratio": dense_summary["params_total"] / summary["params_nonzero"],
        "dense": dense_summary,
        "steps": steps,
        "folding": {**folding, "whitening_unmixed_before_pruning": unmix},
        "importance": importance,
        "deployed": deployed_size(folded),
    }
    if sensitivity is not None:
        report["sensitivity"] = sensitivity
    report["targets"] = check_targets(report, params)
    report["targets_met"] = all(target["met"] for target in report["targets"].values())
    return folded, report


def echo_epoch(row: dict) -> None:
    """Print one fine-tune epoch's figures."""
    click.echo(
        f"  fine-tune epoch {row['epoch']}: train loss {row['train_loss']:.4f}"
        f" | dev acc {row['dev_accuracy']:.4f}"
    )


def run_stage(params_file: Path, prepared: Path, model_path: Path) -> tuple[MLP, dict, list, bool]:
    """Load everything, compress, sweep; return the model, report, sweep rows, strictness."""
    base = load_group(BaseParams, "base", params_file)
    train_params = load_group(TrainParams, "train", params_file)
    params = load_group(CompressParams, "compress", params_file)
    begin_stage(base)
    train, dev, _ = load_data(prepared)
    dense, _ = load_checkpoint(model_path)
    tuning = Tuning(train, dev, train_params, base.seed, log=echo_epoch)
    folded, report = compress(dense, tuning, params)
    return folded, report, sweep(dense, dev, params.sweep, params.scope), params.strict


@click.command("compress")
@params_option
@prepared_option()
@path_option(
    "--model", default="models/mlp.pt", help="Dense checkpoint.", exists=True, dir_okay=False
)
@path_option("--out", default="models/mlp-compressed.pt", help="Checkpoint to write.")
@path_option("--metrics", "metrics_file", default="reports/compress.json", help="Report JSON.")
@path_option("--sweep", "sweep_file", default="reports/compress-sweep.json", help="Sweep data.")
def compress_command(
    params_file: Path, prepared: Path, model: Path, out: Path, metrics_file: Path, sweep_file: Path
) -> None:
    """Shrink, prune, fine-tune and fold the dense MLP; write the compressed checkpoint."""
    started = time.perf_counter()
    folded, report, rows, strict = run_stage(params_file, prepared, model)
    seconds = round(time.perf_counter() - started, 1)  # a run log: not part of the metrics
    missed = missed_targets(report)
    if missed and strict:  # before any write: a failed run leaves no outputs behind
        raise click.ClickException(f"compress missed its targets (compress.strict): {missed}")
    save_checkpoint(out, folded, sparsity=report["sparsity"])
    write_json(metrics_file, report)
    write_json(sweep_file, rows)
    write_run_log("compress", {"seconds": seconds})
    for row in report["steps"]:
        click.echo(
            f"{row['step']}: hidden {row['hidden']}, sparsity {row['sparsity']:.3f}, "
            f"dev accuracy {row['dev_accuracy_before']:.4f} -> {row['dev_accuracy_after']:.4f}"
        )
    click.echo(
        f"compressed in {seconds} s: sparsity {report['sparsity']:.3f}, "
        f"hidden {report['hidden']}, dev accuracy {report['dev_accuracy_before']:.4f} -> "
        f"{report['dev_accuracy_after']:.4f} -> {out}"
    )
    if missed:
        click.echo(f"warning: compress missed its targets: {missed}", err=True)
