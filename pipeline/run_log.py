"""Run logs: what changes between runs of a stage with identical inputs (timings, data source).

DVC hashes every output a stage declares, so a figure that differs from run to run with the
same inputs stays out of them: it goes to logs/<stage>.json, which dvc.yaml does not declare
and git ignores ($DIGITS_LOGS moves it). The last run of each stage overwrites its log.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from digits.atomic import write_json


def logs_dir() -> Path:
    """Where run logs go: $DIGITS_LOGS, else logs/ in the working directory."""
    return Path(os.environ.get("DIGITS_LOGS") or "logs")


def write_run_log(stage: str, record: dict[str, Any]) -> Path:
    """Write one stage's run record to <logs>/<stage>.json (atomically); return the path."""
    path = logs_dir() / f"{stage}.json"
    write_json(path, record)
    return path
