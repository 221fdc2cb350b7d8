"""Click options the stage commands share: the params file, the prepared splits, any path."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click


def path_option(*decls: str, default: str, help: str, **kwargs: Any) -> Any:
    """A path option with its default shown in --help (kwargs go to click.Path)."""
    kind = click.Path(path_type=Path, **kwargs)
    return click.option(*decls, type=kind, default=Path(default), show_default=True, help=help)


params_option = path_option(
    "--params", "params_file", default="params.yaml", help="Parameters file.", dir_okay=False
)


def prepared_option(help: str = "Prepared splits.", must_exist: bool = True) -> Any:
    """The --data option: the directory prepare wrote."""
    return path_option(
        "--data", "prepared", default="data/prepared", help=help, exists=must_exist, file_okay=False
    )
