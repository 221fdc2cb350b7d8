"""The params.yaml `train:` group: TrainParams, and the optimizer and schedule names it accepts.

Loaded by every stage and tool that trains (train, compress, learning-curve, ensemble, lr-find)
and checked by search and studies before a trial runs. Reads and writes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from digits.contract import SIDE
from pipeline.config import require

Optimizer = Literal["sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam", "adamw"]
Schedule = Literal[
    "constant", "step", "exponential", "inverse_time", "polynomial", "cosine", "one_cycle"
]
OPTIMIZERS: tuple[str, ...] = Optimizer.__args__  # type: ignore[attr-defined]
SCHEDULES: tuple[str, ...] = Schedule.__args__  # type: ignore[attr-defined]


@dataclass(frozen=True)
class TrainParams:
    """params.yaml `train:` group."""

    epochs: int = 15
    batch_size: int = 128
    optimizer: Optimizer = "adamw"
    lr: float = 0.003  # peak lr for one_cycle
    momentum: float = 0.9  # momentum, nesterov, rmsprop
    betas: tuple[float, float] = (0.9, 0.999)  # adam, adamw
    weight_decay: float = 0.01  # L2 (decoupled for adamw)
    l1: float = 0.0  # coefficient of sum |W| over Linear weights, added to the loss
    schedule: Schedule = "one_cycle"
    step_epochs: float = 5.0  # step: epochs between decays
    gamma: float = 0.5  # step, exponential: factor per step / per epoch
    decay: float = 0.5  # inverse_time: lr0 / (1 + decay * epoch)
    power: float = 1.0  # polynomial: lr0 * (1 - progress) ** power
    pct_start: float = 0.25  # one_cycle: share of the run spent rising
    div_factor: float = 25.0  # one_cycle: starts at lr / div_factor
    final_div_factor: float = 1e4  # one_cycle: ends at lr / div_factor / final_div_factor
    warmup: float = 0.0  # epochs of linear warmup (0: none)
    clip_norm: float | None = None  # max global gradient norm (null: no clipping)
    max_norm: float | None = None  # max L2 norm of each hidden unit's incoming weights (null: none)
    ema: float = 0.0  # decay per step of a moving average of the weights (0: off); the run ends
    # with the average, and dev figures are the average's (Polyak averaging, as EMA)
    loss: Literal["cross_entropy", "mse"] = "cross_entropy"
    label_smoothing: float = 0.0
    early_stopping: Literal["none", "dev_loss", "dev_accuracy"] = "none"
    patience: int = 3
    augment: bool = False  # small random affine of the 28×28 train images
    augment_degrees: float = 10.0
    augment_shift: float = 2.0  # pixels
    augment_scale: float = 0.1
    # Robustness augmentations (pipeline/training/augment.py), applied after the affine when
    # `augment` is on; each is off at 0, and off draws no random numbers, so old runs repeat
    # exactly.
    augment_elastic: float = 0.0  # elastic distortion: alpha, displacement scale in pixels
    augment_elastic_sigma: float = 4.0  # its smoothing, pixels (Simard et al. 2003: 34 and 4)
    augment_stroke: float = 0.0  # share of images whose strokes are thickened or thinned
    augment_blur: float = 0.0  # share of images blurred
    augment_blur_sigma: float = 1.0  # their Gaussian sigma is uniform in [0, this)
    augment_noise: float = 0.0  # share of images given Gaussian pixel noise
    augment_noise_std: float = 40.0  # its std, uniform in [0, this], pixel levels 0–255
    # Handwriting from other writers (pipeline/training/styles.py), the same way: off at 0.
    augment_styles: float = 0.0  # share of 1s, 4s, 7s, 9s given a style MNIST lacks
    augment_lowres: float = 0.0  # share of images brought through a low-resolution scan
    augment_lowres_sides: tuple[int, int] = (8, 16)  # its side, pixels: uniform in this range
    subset: float = 1.0  # share of the train split `digits train` fits on (search budgets)

    def __post_init__(self) -> None:
        require(self.epochs >= 1, "train.epochs", "must be >= 1")
        require(self.batch_size >= 1, "train.batch_size", "must be >= 1")
        require(self.lr > 0, "train.lr", "must be > 0")
        require(0 <= self.momentum < 1, "train.momentum", "must be in [0, 1)")
        require(all(0 <= b < 1 for b in self.betas), "train.betas", "must be in [0, 1)")
        require(len(self.betas) == 2, "train.betas", "needs two numbers")
        require(self.weight_decay >= 0, "train.weight_decay", "must be >= 0")
        require(self.l1 >= 0, "train.l1", "must be >= 0")
        require(self.step_epochs > 0, "train.step_epochs", "must be > 0")
        require(0 < self.gamma <= 1, "train.gamma", "must be in (0, 1]")
        require(self.decay >= 0, "train.decay", "must be >= 0")
        require(self.power > 0, "train.power", "must be > 0")
        require(0 < self.pct_start < 1, "train.pct_start", "must be in (0, 1)")
        require(self.div_factor >= 1, "train.div_factor", "must be >= 1")
        require(self.final_div_factor >= 1, "train.final_div_factor", "must be >= 1")
        require(self.warmup >= 0, "train.warmup", "must be >= 0")
        require(self.clip_norm is None or self.clip_norm > 0, "train.clip_norm", "must be > 0")
        require(self.max_norm is None or self.max_norm > 0, "train.max_norm", "must be > 0")
        require(0 <= self.ema < 1, "train.ema", "must be in [0, 1)")
        require(0 <= self.label_smoothing < 1, "train.label_smoothing", "must be in [0, 1)")
        require(self.patience >= 1, "train.patience", "must be >= 1")
        require(self.augment_degrees >= 0, "train.augment_degrees", "must be >= 0")
        require(self.augment_shift >= 0, "train.augment_shift", "must be >= 0")
        require(0 <= self.augment_scale < 1, "train.augment_scale", "must be in [0, 1)")
        require(self.augment_elastic >= 0, "train.augment_elastic", "must be >= 0")
        require(self.augment_elastic_sigma > 0, "train.augment_elastic_sigma", "must be > 0")
        for key in ("augment_stroke", "augment_blur", "augment_noise", "augment_styles",
                    "augment_lowres"):  # fmt: skip
            require(0 <= getattr(self, key) <= 1, f"train.{key}", "must be in [0, 1]")
        require(self.augment_blur_sigma > 0, "train.augment_blur_sigma", "must be > 0")
        require(self.augment_noise_std >= 0, "train.augment_noise_std", "must be >= 0")
        low, high = self.augment_lowres_sides
        sides_ok = 4 <= low <= high < SIDE
        require(sides_ok, "train.augment_lowres_sides", "must be 4 <= low <= high < 28")
        require(0 < self.subset <= 1, "train.subset", "must be in (0, 1]")
