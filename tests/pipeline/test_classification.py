"""pipeline.analysis.classification against scikit-learn (the oracle) and hand-checked cases."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.calibration import calibration_curve
from sklearn.metrics import log_loss, precision_recall_fscore_support

from digits.confusion import confusion_counts
from pipeline.analysis import classification


@pytest.fixture
def predictions() -> tuple[np.ndarray, np.ndarray]:
    """Logits of a noisy classifier (about 70% right) on 500 rows, and their labels."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, 10, 500)
    logits = rng.normal(0, 1.5, size=(500, 10))
    logits[np.arange(500), y] += 2.0
    return logits, y


def test_accuracy_error_and_loss_match_sklearn(predictions):
    logits, y = predictions
    assert 0.4 < classification.accuracy(logits, y) < 0.9
    assert classification.error(logits, y) == pytest.approx(1 - np.mean(logits.argmax(1) == y))
    probs = classification.softmax(logits)
    assert classification.cross_entropy(logits, y) == pytest.approx(
        log_loss(y, probs, labels=range(10))
    )


def test_per_class_scores_match_sklearn_including_a_never_predicted_class(predictions):
    logits, y = predictions
    predicted = np.where(logits.argmax(1) == 7, 1, logits.argmax(1))  # class 7 never predicted
    scores = classification.per_class_scores(confusion_counts(y, predicted))
    oracle = precision_recall_fscore_support(y, predicted, labels=range(10), zero_division=0)
    for key, expected in zip(("precision", "recall", "f1", "support"), oracle, strict=True):
        np.testing.assert_allclose(scores[key], expected)
    assert scores["precision"][7] == 0.0


def test_reliability_matches_sklearn_calibration_curve_on_top_class_confidence(predictions):
    logits, y = predictions
    probs = classification.softmax(logits)
    curve = classification.reliability(probs, y, bins=10)
    correct = probs.argmax(1) == y
    accuracy, confidence = calibration_curve(correct, probs.max(1), n_bins=10)
    seen = np.asarray(curve["count"]) > 0
    ours_accuracy = np.array(curve["accuracy"], dtype=object)
    np.testing.assert_allclose(ours_accuracy[seen].astype(float), accuracy)
    np.testing.assert_allclose(
        np.array(curve["confidence"], object)[seen].astype(float), confidence
    )
    assert sum(curve["count"]) == len(y)
    assert seen.sum() < len(seen) and all(a is None for a in ours_accuracy[~seen])


def test_ece_is_zero_when_calibrated_and_the_gap_when_overconfident():
    # 4 rows at confidence 0.75, 3 right: perfectly calibrated.
    probs = np.array([[0.75, 0.25]] * 4)
    curve = classification.reliability(probs, np.array([0, 0, 0, 1]), bins=4)
    assert classification.expected_calibration_error(curve) == pytest.approx(0.0)
    # Same confidence, half right: ECE = |0.5 - 0.75|.
    curve = classification.reliability(probs, np.array([0, 0, 1, 1]), bins=4)
    assert classification.expected_calibration_error(curve) == pytest.approx(0.25)


def test_confident_errors_lists_only_wrong_rows_most_confident_first():
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.99, 0.01], [0.3, 0.7]])
    y = np.array([1, 1, 1, 0, 0])
    assert classification.confident_errors(probs, y, k=5).tolist() == [0, 4, 2]
    assert classification.confident_errors(probs, y, k=1).tolist() == [0]


def test_summarize_reuses_the_single_accuracy_and_is_json_ready(predictions):
    import json

    logits, y = predictions
    summary = classification.summarize(logits, y, bins=15)
    assert summary["accuracy"] == classification.accuracy(logits, y)
    assert summary["accuracy"] + summary["error"] == pytest.approx(1.0)
    assert np.sum(summary["confusion"]) == len(y)
    assert summary["macro_f1"] == pytest.approx(np.mean(summary["per_class"]["f1"]))
    json.loads(json.dumps(summary, allow_nan=False))  # valid JSON: no NaN anywhere


def answers(confidence: list[float], right: list[bool]) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities whose top class has the given confidence, and labels right or wrong."""
    probs = np.array([[c] + [(1 - c) / 9] * 9 for c in confidence])
    return probs, np.array([0 if r else 1 for r in right])


def test_low_confidence_threshold_flags_the_largest_least_confident_set_right_at_most_that_often():
    probs, y = answers([0.3, 0.4, 0.45, 0.9, 0.95], [False, True, False, True, True])
    threshold = classification.low_confidence_threshold(probs, y, 0.5)
    assert threshold == pytest.approx(0.925)  # the four lowest are right 2 of 4 times; five: 3/5
    figures = classification.flagged_figures(probs, y, threshold)
    assert figures["flagged_share"] == pytest.approx(0.8)
    assert figures["flagged_accuracy"] == pytest.approx(0.5)
    assert figures["unflagged_accuracy"] == 1.0


def test_low_confidence_threshold_flags_nothing_when_every_answer_is_right_and_all_when_none_is():
    probs, y = answers([0.6, 0.7, 0.8], [True, True, True])
    assert classification.low_confidence_threshold(probs, y, 0.5) == 0.0
    assert classification.flagged_figures(probs, y, 0.0)["flagged_share"] == 0.0
    probs, y = answers([0.6, 0.7, 0.8], [False, False, False])
    threshold = classification.low_confidence_threshold(probs, y, 0.5)
    assert classification.flagged_figures(probs, y, threshold)["flagged_share"] == 1.0


@pytest.mark.parametrize("rule", [0.3, 0.5, 0.6])
def test_low_confidence_threshold_keeps_flagged_accuracy_within_the_rule_on_random_answers(rule):
    rng = np.random.default_rng(int(rule * 10))
    probs = classification.softmax(rng.normal(0, 3, size=(500, 10)))
    # calibrated answers: right as often as they are confident
    right = rng.random(500) < probs.max(axis=1)
    y = np.where(right, probs.argmax(axis=1), (probs.argmax(axis=1) + 1) % 10)
    threshold = classification.low_confidence_threshold(probs, y, rule)
    flagged = classification.flagged_figures(probs, y, threshold)
    assert 0 < flagged["flagged_share"] < 1
    assert flagged["flagged_accuracy"] <= rule
    # every larger set of least confident answers is right more often than the rule allows
    order = np.argsort(probs.max(axis=1))
    correct = (probs.argmax(axis=1) == y)[order]
    accuracy = np.cumsum(correct) / np.arange(1, 501)
    assert (accuracy[round(flagged["flagged_share"] * 500) :] > rule).all()
