"""How `digits score` scores: the options its command builds once and both engines read.

ScoreOptions is frozen and has no defaults: the command's flags are its only source, a flag
without a field (or a field without a flag) fails at once, and a bad value names its field.
Reads and writes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from serving.scoring.rows import FORMATS
from serving.session import PROVIDERS


@dataclass(frozen=True, kw_only=True)
class ScoreOptions:
    """The scoring options of one run: output format, batching, model session, labels, Ray."""

    fmt: str  # 'csv', 'jsonl' or 'parquet' (from the output's extension)
    batch_size: int  # images per inference call and per read
    provider: str  # ONNX Runtime provider: 'auto', 'cuda' or 'cpu'
    probabilities: bool  # also write p0…p9
    labels: Path | None  # true labels of all images in input order (local engine only)
    skip_bad: bool  # list bad inputs and score the rest, instead of stopping at the first
    quiet: bool  # no progress bar, no summary
    ray_address: str | None  # the Ray cluster to join; None: $RAY_ADDRESS, else a local Ray
    actors: int | None  # Ray actors, one session each; None: one per CPU of the cluster

    def __post_init__(self) -> None:
        formats = tuple(FORMATS.values())
        require(self.fmt in formats, "fmt", f"must be one of {', '.join(formats)}")
        require(self.batch_size >= 1, "batch_size", "must be >= 1")
        require(self.provider in PROVIDERS, "provider", f"must be one of {', '.join(PROVIDERS)}")
        require(self.actors is None or self.actors >= 1, "actors", "must be >= 1 or None")


def require(condition: bool, field: str, message: str) -> None:
    """Raise a ValueError naming `field` unless `condition` holds."""
    if not condition:
        raise ValueError(f"ScoreOptions.{field} {message}")
