"""The local engine of `digits score`: every input scored in this process, in chunks, into one file.

Reads the inputs through inputs.py (IDX, .npy/.npz, CSV, Parquet, image files, directories,
globs) and one ONNX Runtime session; writes one row per image to the output through rows.py,
renamed into place only when complete. A bad input stops the run, or with skip_bad leaves no rows
and is listed. Memory stays bounded whatever the input size. Run: `digits score` (command.py).
"""

from __future__ import annotations

import itertools
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from serving.answers import answer_rows, no_digit_reasons
from serving.scoring.inputs import (
    Chunk,
    InputError,
    expand_inputs,
    kind_of,
    load_labels,
    read_file,
    read_images,
    record,
    row_count,
)
from serving.scoring.options import ScoreOptions
from serving.scoring.rows import ParquetRows, TextRows, open_rows
from serving.scoring.summary import Totals, no_counts, tally
from serving.session import OnnxModel


def group_inputs(paths: list[Path]) -> Iterator[list[Path]]:
    """Runs of consecutive image files together (scored in shared batches), other files alone."""
    for is_image, run in itertools.groupby(paths, key=lambda p: kind_of(p) == "image"):
        files = list(run)
        yield from [files] if is_image else ([p] for p in files)


@dataclass
class Scorer:
    """Scores inputs into one open output file, tallying labelled rows; undoes skipped inputs."""

    model: OnnxModel
    out: TextRows | ParquetRows
    batch: int
    given: np.ndarray | None  # --labels: one per image, in input order
    skipped: list[str] | None  # None: the first bad input stops the run
    bar: tqdm
    rows: int = 0
    matrix: np.ndarray = field(default_factory=no_counts)

    def score_chunks(self, chunks: Iterator[Chunk]) -> None:
        """Predict and write each chunk; count labelled rows into the confusion matrix."""
        for chunk in chunks:
            n = len(chunk.ids)
            _, probabilities = self.model.predict(np.asarray(chunk.pixels, dtype=np.float32))
            reasons = no_digit_reasons(chunk.pixels, chunk.reasons)
            answers = answer_rows(probabilities, reasons, self.model.threshold)
            self.out.write(chunk.ids, probabilities, answers)
            labels = chunk.labels if self.given is None else self.given[self.rows : self.rows + n]
            if labels is not None:
                if len(labels) != n:
                    raise InputError(f"--labels has {len(self.given)} labels, inputs have more")
                try:
                    self.matrix += tally(labels, answers.digits, answers.answered)
                except ValueError as err:
                    raise InputError(str(err)) from None
            self.rows += n
            self.bar.update(n)

    def score_input(self, paths: list[Path]) -> None:
        """Score one file or a run of image files; with skipping on, a failure leaves no rows."""
        mark, rows, matrix = self.out.mark(), self.rows, self.matrix.copy()
        if kind_of(paths[0]) == "image":
            chunks = read_images(paths, self.batch, self.skipped)
        else:
            chunks = read_file(paths[0], self.batch)
        try:
            self.score_chunks(chunks)
        except InputError as err:
            if self.skipped is None:
                raise
            self.skipped.append(str(err))
            self.out.rollback(mark)
            self.rows, self.matrix = rows, matrix


def progress(paths: list[Path], quiet: bool) -> tqdm:
    """A progress bar on a terminal (stderr), silent otherwise or with -q."""
    shown = not quiet and sys.stderr.isatty()
    # Sizing the bar opens every input once more; only pay that when the bar is drawn.
    return tqdm(
        total=row_count(paths) if shown else None, unit="img", unit_scale=True, disable=not shown
    )


def score_locally(
    model: OnnxModel, inputs: Sequence[str], output: Path, options: ScoreOptions
) -> Totals:
    """Score every input in this process into the file `output`."""
    skipped = [] if options.skip_bad else None
    given = load_labels(options.labels) if options.labels else None
    paths = [p for p in expand_inputs(list(inputs)) if not record(p, skipped)]
    with open_rows(output, options.fmt, options.probabilities) as out:
        with progress(paths, options.quiet) as bar:
            scorer = Scorer(model, out, options.batch_size, given, skipped, bar)
            for group in group_inputs(paths):
                scorer.score_input(group)
        if given is not None and len(given) != scorer.rows:
            raise InputError(f"--labels has {len(given)} labels for {scorer.rows} images")
    return Totals(scorer.rows, scorer.matrix, skipped or [])
