"""What a `digits score` run did: rows scored, confusion counts of the labelled ones, bad inputs.

Both engines count into Totals (the Ray engine once per block, added up on the driver);
the command prints them with summarize. The confusion counts have one column per digit and a
last one for images answered with no digit. Pure numpy; reads and writes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from digits.confusion import confusion_counts
from digits.contract import CLASSES, LABELS

NONE = CLASSES  # the confusion counts' column of images answered with no digit


def no_counts() -> np.ndarray:
    """Confusion counts (CLASSES, CLASSES + 1) of nothing."""
    return np.zeros((CLASSES, CLASSES + 1), np.int64)


@dataclass
class Totals:
    """What one engine run (or one Ray block) did: rows written, counts, skipped inputs."""

    rows: int = 0
    matrix: np.ndarray = field(default_factory=no_counts)
    skipped: list[str] = field(default_factory=list)

    def add(self, other: Totals) -> None:
        """Fold another run's totals into these."""
        self.rows += other.rows
        self.matrix += other.matrix
        self.skipped += other.skipped


def tally(labels: np.ndarray, digits: np.ndarray, answered: np.ndarray) -> np.ndarray:
    """Counts (CLASSES, CLASSES + 1) of labelled rows: row = true digit, column = answer."""
    matrix = confusion_counts(labels, np.where(answered, digits, 0), CLASSES)
    none = np.bincount(np.asarray(labels, np.int64)[~answered], minlength=CLASSES)
    matrix[:, 0] -= none  # those rows were counted as 0 above
    return np.column_stack([matrix, none])


def summarize(matrix: np.ndarray) -> str:
    """Accuracy, the confusion matrix with per-class recall, and the most common mistakes."""
    total, right = int(matrix.sum()), int(np.trace(matrix[:, :NONE]))
    lines = [f"accuracy {right / total:.4f} ({right}/{total} labelled images)"]
    if none := int(matrix[:, NONE].sum()):
        lines.append(f"no digit found in {none} labelled images (counted as wrong)")
    lines.append("confusion (rows: true digit, columns: answer; last: recall)")
    lines.append("     " + "".join(f"{d:>6}" for d in [*LABELS, "none"]))
    for d, row in enumerate(matrix):
        recall = row[d] / row.sum() if row.sum() else float("nan")
        lines.append(f"{d:>5}" + "".join(f"{c:>6}" for c in row) + f"  {recall:.3f}")
    errors = matrix[:, :NONE] - np.diag(np.diag(matrix))
    worst = [divmod(int(i), CLASSES) for i in np.argsort(-errors, axis=None, kind="stable")[:5]]
    mistakes = [f"{t}→{p} ({errors[t, p]})" for t, p in worst if errors[t, p]]
    lines.append("most confused: " + (", ".join(mistakes) or "none"))
    return "\n".join(lines)
