"""digits.confusion against scikit-learn's confusion_matrix (the oracle)."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import confusion_matrix

from digits.confusion import confusion_counts


def test_confusion_counts_match_sklearn_rows_actual_columns_predicted() -> None:
    rng = np.random.default_rng(0)
    y, predicted = rng.integers(0, 10, 500), rng.integers(0, 10, 500)
    ours = confusion_counts(y, predicted)
    np.testing.assert_array_equal(ours, confusion_matrix(y, predicted, labels=range(10)))
    assert confusion_counts(np.array([3]), np.array([5]))[3, 5] == 1


def test_confusion_counts_of_another_class_count() -> None:
    counts = confusion_counts(np.array([0, 2, 2]), np.array([1, 2, 0]), classes=3)
    np.testing.assert_array_equal(counts, [[0, 1, 0], [0, 0, 0], [1, 0, 1]])


@pytest.mark.parametrize(
    ("y", "predicted", "name"),
    [([10], [1], "labels"), ([-1], [1], "labels"), ([1], [10], "predictions")],
)
def test_confusion_counts_refuse_values_outside_the_classes(y, predicted, name) -> None:
    with pytest.raises(ValueError, match=f"{name} must be classes 0–9"):
        confusion_counts(np.array(y), np.array(predicted))
