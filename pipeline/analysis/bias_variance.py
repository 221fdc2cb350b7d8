"""Bias/variance diagnosis (Ng's recipe): avoidable bias, variance and the dev→test gap.

From a model's train, dev and test error and the Bayes-error proxy: a verdict and the next
steps the recipe prescribes. The `evaluate` stage calls it per model; the report words it.
Pure functions; reads and writes nothing.
"""

from __future__ import annotations

from typing import Any, Protocol

# Errors are ratios of counts: a gap equal to its threshold must not tip over on float noise.
TOLERANCE = 1e-9
NEXT_STEPS = {
    "bias": [
        "bigger network: more or wider hidden layers (model.hidden)",
        "train longer (train.epochs)",
        "better optimizer or schedule (train.optimizer, train.lr, train.schedule)",
        "less regularization (train.weight_decay, model.dropout)",
    ],
    "variance": [
        "more data, or augmentation (train.augment)",
        "more regularization (train.weight_decay, model.dropout, train.l1)",
        "early stopping on dev (train.early_stopping)",
        "a smaller network, or prune harder (compress)",
    ],
    "mismatch": ["dev and test disagree: enlarge dev, or draw it from the test distribution"],
    "neither": ["near the Bayes proxy: keep this model; watch calibration and the worst errors"],
}


class Thresholds(Protocol):
    """What the diagnosis reads of params.yaml `evaluate:` (the stage's EvaluateParams)."""

    bayes_error: float  # human-level / Bayes error proxy
    bias_threshold: float  # avoidable bias above this is high bias
    variance_threshold: float  # dev - train error above this is high variance
    mismatch_threshold: float  # |test - dev error| above this flags a mismatch


def diagnose(
    train_error: float, dev_error: float, test_error: float, params: Thresholds
) -> dict[str, Any]:
    """Avoidable bias, variance and dev→test gap, a verdict and the recipe's next steps."""
    avoidable_bias = train_error - params.bayes_error
    variance = dev_error - train_error
    gap = test_error - dev_error
    high_bias = avoidable_bias > params.bias_threshold + TOLERANCE
    high_variance = variance > params.variance_threshold + TOLERANCE
    mismatch = abs(gap) > params.mismatch_threshold + TOLERANCE
    verdict = {
        (True, True): "high bias and high variance",
        (True, False): "high bias",
        (False, True): "high variance",
        (False, False): "neither",
    }[high_bias, high_variance]
    steps: list[str] = []
    if high_bias:
        steps += NEXT_STEPS["bias"]
    if high_variance:
        steps += NEXT_STEPS["variance"]
    if not steps:
        steps += NEXT_STEPS["neither"]
    if mismatch:
        steps += NEXT_STEPS["mismatch"]
    return {
        "bayes_error": params.bayes_error,
        "avoidable_bias": avoidable_bias,
        "variance": variance,
        "dev_test_gap": gap,
        "high_bias": high_bias,
        "high_variance": high_variance,
        "mismatch": mismatch,
        "verdict": verdict,
        "next_steps": steps,
    }
