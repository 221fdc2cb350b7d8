"""Bias/variance verdicts over the course's worked cases."""

from __future__ import annotations

import pytest

from pipeline.analysis.bias_variance import NEXT_STEPS, diagnose
from pipeline.config import ParamError, parse_group
from pipeline.stages.evaluate import EvaluateParams


@pytest.mark.parametrize(
    ("train", "dev", "bayes", "verdict"),
    [
        (0.01, 0.11, 0.002, "high variance"),
        (0.15, 0.16, 0.002, "high bias"),
        (0.15, 0.30, 0.002, "high bias and high variance"),
        (0.005, 0.01, 0.002, "neither"),
        (0.15, 0.16, 0.15, "neither"),  # avoidable bias is about 0 when humans err 15% too
    ],
)
def test_verdict_of_the_worked_cases(train, dev, bayes, verdict):
    result = diagnose(train, dev, dev, EvaluateParams(bayes_error=bayes))
    assert result["verdict"] == verdict
    assert result["avoidable_bias"] == pytest.approx(train - bayes)
    assert result["variance"] == pytest.approx(dev - train)
    assert result["mismatch"] is False


def test_next_steps_follow_the_recipe():
    params = EvaluateParams()
    assert diagnose(0.15, 0.16, 0.16, params)["next_steps"] == NEXT_STEPS["bias"]
    assert diagnose(0.01, 0.11, 0.11, params)["next_steps"] == NEXT_STEPS["variance"]
    both = diagnose(0.15, 0.30, 0.30, params)["next_steps"]
    assert both == NEXT_STEPS["bias"] + NEXT_STEPS["variance"]
    assert diagnose(0.005, 0.01, 0.01, params)["next_steps"] == NEXT_STEPS["neither"]


def test_dev_test_gap_flags_a_distribution_mismatch_either_way():
    params = EvaluateParams(mismatch_threshold=0.01)
    worse = diagnose(0.005, 0.01, 0.05, params)
    assert worse["mismatch"] is True
    assert worse["dev_test_gap"] == pytest.approx(0.04)
    assert worse["next_steps"][-1] == NEXT_STEPS["mismatch"][0]
    assert diagnose(0.005, 0.05, 0.01, params)["mismatch"] is True
    assert diagnose(0.005, 0.01, 0.015, params)["mismatch"] is False


def test_thresholds_are_params():
    strict = EvaluateParams(variance_threshold=0.001)
    assert diagnose(0.005, 0.01, 0.01, strict)["verdict"] == "high variance"


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        ({"bayes_error": 1.5}, "evaluate.bayes_error"),
        ({"bias_threshold": -0.1}, "evaluate.bias_threshold"),
        ({"calibration_bins": 0}, "evaluate.calibration_bins"),
        ({"verdict": "x"}, "evaluate.verdict"),
    ],
)
def test_bad_params_name_the_key(raw, key):
    with pytest.raises(ParamError, match=key):
        parse_group(EvaluateParams, "evaluate", raw)
