"""What every trial of `digits search` and `digits study` is checked with and ranked by.

Both tools check a trial's params.yaml settings against the same dataclasses before anything
runs, and rank trials by the same dev figures, never test. Pure constants; reads nothing.
"""

from __future__ import annotations

from pipeline.config import BaseParams
from pipeline.model.network import ModelParams
from pipeline.training.params import TrainParams

# The groups whose dataclasses check sampled values before anything runs (data's lives in the
# prepare stage, which only the CLI may import: its keys are still checked against params.yaml).
CHECKED_GROUPS = {"base": BaseParams, "model": ModelParams, "train": TrainParams}
DEV_METRICS = "reports/train.json"  # the train stage's final dev figures: the ranking's source
