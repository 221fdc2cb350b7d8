"""Loads `params.yaml` groups into frozen dataclasses that reject unknown keys and bad values.

Every stage reads its own group plus `base`; hyperparameters live only in params.yaml.
"""

from __future__ import annotations

import dataclasses
import random
import re
import sys
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar

import click
import numpy as np
import yaml

from pipeline import portable

T = TypeVar("T")

PARAMS_FILE = Path("params.yaml")
KINDS = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}


class ParamsLoader(yaml.SafeLoader):
    """PyYAML's safe loader that also reads `1e-05` as a float, as YAML 1.2 does.

    `dvc exp run -S train.lr=0.00001` writes `lr: 1e-05` into params.yaml; YAML 1.1 wants a dot.
    """


ParamsLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?[0-9]+[eE][-+]?[0-9]+$"), list("-+0123456789")
)


def load_yaml(text: str) -> Any:
    """Parse params-style YAML (floats as DVC writes them)."""
    return yaml.load(text, Loader=ParamsLoader)  # a SafeLoader: builds plain data only


class ParamError(click.ClickException):
    """A params.yaml value is missing, unknown or invalid; the message names the key."""


@dataclasses.dataclass(frozen=True)
class BaseParams:
    """Shared by every stage: the global seed, and how torch runs (pipeline.portable)."""

    seed: int = 42
    portable: bool = False  # params.yaml turns it on: it costs ~1.6x (docs/reproducibility.md)
    threads: int = 2

    def __post_init__(self) -> None:
        require(self.seed >= 0, "base.seed", "must be >= 0")
        require(self.threads >= 1, "base.threads", "must be >= 1")


def require(condition: bool, key: str, message: str) -> None:
    """Raise a ParamError naming `key` unless `condition` holds."""
    if not condition:
        raise ParamError(f"params: {key} {message}")


def read_params(path: Path = PARAMS_FILE) -> dict[str, Any]:
    """Read the whole params file as a dict, with a clear error when it is missing or malformed."""
    try:
        data = load_yaml(Path(path).read_text())
    except OSError as err:
        raise ParamError(f"cannot read params file {path}: {err.strerror}") from None
    except yaml.YAMLError as err:
        raise ParamError(f"params file {path} is not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise ParamError(f"params file {path} must hold a mapping of groups")
    return data


def load_group(cls: type[T], group: str, path: Path = PARAMS_FILE) -> T:
    """Build dataclass `cls` from group `group` of the params file."""
    return parse_group(cls, group, read_params(path).get(group, {}))


def parse_group(cls: type[T], group: str, raw: Any) -> T:
    """Build dataclass `cls` from a mapping, checking keys and value types."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ParamError(f"params: {group} must be a mapping, got {type(raw).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise ParamError(
            f"params: unknown key {group}.{unknown[0]} (known: {', '.join(sorted(fields))})"
        )
    hints = typing.get_type_hints(cls)
    values = {name: coerce(value, hints[name], f"{group}.{name}") for name, value in raw.items()}
    try:
        return cls(**values)
    except TypeError as err:
        raise ParamError(f"params: {group}: {err}") from None


def coerce(value: Any, hint: Any, key: str) -> Any:
    """Check `value` against type `hint` (with int -> float widening and lists -> tuples)."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin is Literal:
        if value not in args:
            choices = " | ".join(str(a) for a in args)
            raise ParamError(f"params: {key} must be one of {choices}, got {value!r}")
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        errors = []
        for option in options:
            try:
                return coerce(value, option, key)
            except ParamError as err:
                errors.append(str(err))
        raise ParamError(errors[0])
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise ParamError(f"params: {key} must be a list, got {value!r}")
        item = args[0] if args else Any
        return tuple(coerce(v, item, f"{key}[{i}]") for i, v in enumerate(value))
    if hint is Any:
        return value
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    wrong_bool = hint in (int, float) and isinstance(value, bool)
    if wrong_bool or (isinstance(hint, type) and not isinstance(value, hint)):
        kind = KINDS.get(hint, hint.__name__)
        raise ParamError(f"params: {key} must be {kind}, got {value!r}")
    return value


def begin_stage(base: BaseParams) -> None:
    """What every stage does first: seed everything, and run torch portably when asked."""
    if base.portable and "torch" in sys.modules:
        portable.check(base.threads)
    seed_everything(base.seed)


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch (when the stage uses it) so a stage is repeatable."""
    random.seed(seed)
    np.random.seed(seed)
    torch = sys.modules.get("torch")  # stages without torch should not pay for importing it
    if torch is not None:
        torch.manual_seed(seed)
