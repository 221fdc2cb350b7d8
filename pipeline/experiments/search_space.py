"""Search spaces: per-param distributions read from search.yaml, seeded sampling, narrowing.

A space names params.yaml keys (`train.lr`) and gives each a distribution — log_uniform,
uniform, integer or choice — optionally only `when` another key has one of some values
(momentum only for the sgd-family optimizers). `budget` holds keys fixed for every trial (fewer
epochs, a train subset). Reads and writes no files except through read_space / write_space.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import numpy as np
import yaml

from digits.atomic import atomic_path
from pipeline.config import ParamError, load_yaml, parse_group

DISTRIBUTIONS = ("log_uniform", "uniform", "integer", "choice")
SPEC_KEYS = {"distribution", "low", "high", "choices", "when"}
SPACE_KEYS = {"name", "seed", "trials", "top_k", "budget", "params"}
Config = dict[str, Any]  # "group.key" -> value, as `dvc exp run -S` sets it


class SpaceError(click.ClickException):
    """A search space is malformed, names an unknown param, or has bad bounds."""


@dataclass(frozen=True)
class ParamSpace:
    """One param's distribution; `when` maps another key to the values that switch it on."""

    key: str
    distribution: str
    low: float | None = None
    high: float | None = None
    choices: tuple[Any, ...] = ()
    when: tuple[tuple[str, tuple[Any, ...]], ...] = ()

    def as_yaml(self) -> dict[str, Any]:
        """The mapping search.yaml writes for this param."""
        out: dict[str, Any] = {"distribution": self.distribution}
        if self.distribution == "choice":
            out["choices"] = list(self.choices)
        else:
            out.update(low=self.low, high=self.high)
        if self.when:
            out["when"] = {key: list(values) for key, values in self.when}
        return out


@dataclass(frozen=True)
class SearchSpace:
    """A whole search: its name (experiment names start with it), seed, size and params."""

    name: str
    params: tuple[ParamSpace, ...]
    seed: int = 0
    trials: int = 20
    top_k: int = 5
    budget: tuple[tuple[str, Any], ...] = ()

    def as_yaml(self) -> dict[str, Any]:
        """The mapping read_space reads back into the same space."""
        return {
            "name": self.name,
            "seed": self.seed,
            "trials": self.trials,
            "top_k": self.top_k,
            "budget": dict(self.budget),
            "params": {p.key: p.as_yaml() for p in self.params},
        }


def is_number(value: Any) -> bool:
    """A YAML int or float, not a bool (YAML 1.1 reads `1e-4` as a string: write `1.0e-4`)."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def parse_param(key: str, raw: Any) -> ParamSpace:
    """One param's mapping -> ParamSpace, checking the distribution and its bounds."""
    if not isinstance(raw, dict):
        raise SpaceError(f"search space: {key} must be a mapping with a distribution")
    unknown = sorted(set(raw) - SPEC_KEYS)
    if unknown:
        raise SpaceError(f"search space: {key}: unknown field {unknown[0]}")
    kind = raw.get("distribution")
    if kind not in DISTRIBUTIONS:
        raise SpaceError(
            f"search space: {key}: distribution must be one of {' | '.join(DISTRIBUTIONS)}"
        )
    when = parse_when(key, raw.get("when") or {})
    if kind == "choice":
        choices = raw.get("choices")
        if not isinstance(choices, list) or not choices:
            raise SpaceError(f"search space: {key}: choice needs a non-empty list of choices")
        return ParamSpace(key, kind, choices=tuple(freeze(c) for c in choices), when=when)
    low, high = raw.get("low"), raw.get("high")
    if not (is_number(low) and is_number(high)):
        raise SpaceError(
            f"search space: {key}: low and high must be numbers, got {low!r}, {high!r}"
        )
    if not low < high:
        raise SpaceError(f"search space: {key}: low must be below high, got {low} >= {high}")
    if kind == "log_uniform" and low <= 0:
        raise SpaceError(f"search space: {key}: log_uniform needs low > 0, got {low}")
    if kind == "integer" and not (isinstance(low, int) and isinstance(high, int)):
        raise SpaceError(f"search space: {key}: integer bounds must be integers")
    return ParamSpace(key, kind, low=low, high=high, when=when)


def freeze(value: Any) -> Any:
    """Lists -> tuples, so choices hash and compare like the params they become."""
    return tuple(freeze(v) for v in value) if isinstance(value, list) else value


def parse_when(key: str, raw: Any) -> tuple[tuple[str, tuple[Any, ...]], ...]:
    """The `when` condition: {other key: value or [values]}."""
    if not isinstance(raw, dict):
        raise SpaceError(f"search space: {key}: when must map a key to its values")
    return tuple(
        (other, tuple(freeze(v) for v in (values if isinstance(values, list) else [values])))
        for other, values in raw.items()
    )


def parse_space(raw: Any, defaults: dict[str, Any]) -> SearchSpace:
    """A search.yaml mapping -> SearchSpace, every key checked against params.yaml `defaults`."""
    if not isinstance(raw, dict):
        raise SpaceError("search space must be a mapping with name and params")
    unknown = sorted(set(raw) - SPACE_KEYS)
    if unknown:
        raise SpaceError(
            f"search space: unknown field {unknown[0]} (known: {', '.join(sorted(SPACE_KEYS))})"
        )
    name = raw.get("name")
    if not isinstance(name, str) or not name.replace("-", "").isalnum():
        raise SpaceError(f"search space: name must be letters, digits and dashes, got {name!r}")
    specs = raw.get("params")
    if not isinstance(specs, dict) or not specs:
        raise SpaceError("search space: params must map at least one key to a distribution")
    budget = raw.get("budget") or {}
    if not isinstance(budget, dict):
        raise SpaceError("search space: budget must map keys to fixed values")
    params = tuple(parse_param(key, spec) for key, spec in specs.items())
    space = SearchSpace(
        name=name,
        params=params,
        seed=count(raw, "seed", 0, minimum=0),
        trials=count(raw, "trials", 20, minimum=1),
        top_k=count(raw, "top_k", 5, minimum=1),
        budget=tuple((k, freeze(v)) for k, v in budget.items()),
    )
    check_keys(space, defaults)
    return space


def count(raw: dict, field: str, default: int, minimum: int) -> int:
    """An integer field of the space, at least `minimum`."""
    value = raw.get(field, default)
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise SpaceError(f"search space: {field} must be an integer >= {minimum}, got {value!r}")
    return value


def check_keys(space: SearchSpace, defaults: dict[str, Any]) -> None:
    """Every key the space sets or conditions on is a params.yaml key; conditions come first."""
    seen: set[str] = set()
    for key, _ in space.budget:
        lookup(defaults, key)
    for param in space.params:
        lookup(defaults, param.key)
        for other, _ in param.when:
            lookup(defaults, other)
            if other in {p.key for p in space.params} and other not in seen:
                raise SpaceError(f"search space: {param.key}: list {other} before it (when)")
        seen.add(param.key)


def lookup(params: dict[str, Any], key: str) -> Any:
    """params.yaml's value of `group.key`, or a SpaceError naming the unknown key."""
    group, _, name = key.partition(".")
    if not name or not isinstance(params.get(group), dict) or name not in params[group]:
        raise SpaceError(f"search space: unknown param {key} (not in params.yaml)")
    return params[group][name]


def read_space(path: Path, defaults: dict[str, Any]) -> SearchSpace:
    """Read and check a search.yaml file."""
    try:
        raw = load_yaml(Path(path).read_text())
    except OSError as err:
        raise SpaceError(f"cannot read search space {path}: {err.strerror}") from None
    except yaml.YAMLError as err:
        raise SpaceError(f"search space {path} is not valid YAML: {err}") from None
    return parse_space(raw, defaults)


def write_space(path: Path, space: SearchSpace, comment: str = "") -> None:
    """Write a space as search.yaml (atomically), with a leading comment."""
    header = "".join(f"# {line}\n" for line in comment.splitlines())
    text = header + yaml.safe_dump(thaw(space.as_yaml()), sort_keys=False)
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def thaw(value: Any) -> Any:
    """Tuples back to lists, for YAML and JSON."""
    if isinstance(value, dict):
        return {k: thaw(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [thaw(v) for v in value]
    return value


def check_values(space: SearchSpace, defaults: dict[str, Any], groups: dict[str, type]) -> None:
    """Build each checked group at every bound and choice, so a bad bound fails before a run."""
    for param in space.params:
        ends = param.choices if param.distribution == "choice" else (param.low, param.high)
        for value in ends:
            check_config({**dict(space.budget), param.key: value}, defaults, groups)


def check_config(config: Config, defaults: dict[str, Any], groups: dict[str, type]) -> None:
    """Parse each `groups` dataclass with the config applied; a bad value raises SpaceError."""
    merged = {g: dict(v) if isinstance(v, dict) else v for g, v in defaults.items()}
    for key, value in config.items():
        group, _, name = key.partition(".")
        merged[group][name] = thaw(value)
    for group, cls in groups.items():
        try:
            parse_group(cls, group, merged.get(group))
        except ParamError as err:
            raise SpaceError(f"search space: {err.message}") from None


def sample_value(param: ParamSpace, rng: np.random.Generator) -> Any:
    """One draw; log_uniform is uniform in log space, rounded to 4 significant digits."""
    if param.distribution == "choice":
        return param.choices[int(rng.integers(len(param.choices)))]
    if param.distribution == "integer":
        return int(rng.integers(int(param.low), int(param.high) + 1))
    if param.distribution == "log_uniform":
        value = math.exp(rng.uniform(math.log(param.low), math.log(param.high)))
    else:
        value = rng.uniform(param.low, param.high)
    return float(f"{value:.4g}")


def is_active(param: ParamSpace, config: Config, defaults: dict[str, Any]) -> bool:
    """Whether a conditional param applies: each `when` key (sampled, else params.yaml) matches."""
    for other, values in param.when:
        current = config[other] if other in config else freeze(lookup(defaults, other))
        if current not in values:
            return False
    return True


def sample_config(space: SearchSpace, index: int, defaults: dict[str, Any]) -> Config:
    """Trial `index`'s config; its own seeded stream, so trial i is the same for any count."""
    rng = np.random.default_rng([space.seed, index])
    config: Config = {}
    for param in space.params:
        value = sample_value(param, rng)  # drawn even when inactive: later draws stay put
        if is_active(param, config, defaults):
            config[param.key] = value
    return config


def trial_name(space: SearchSpace, index: int, config: Config) -> str:
    """The DVC experiment name: space name, index, and a digest of what the trial sets."""
    settings = {**dict(space.budget), **config}
    digest = hashlib.sha256(json.dumps(thaw(settings), sort_keys=True).encode()).hexdigest()
    return f"{space.name}-{index:02d}-{digest[:6]}"


def narrow_param(param: ParamSpace, values: list[Any], margin: float) -> ParamSpace:
    """The bounds the top trials' values span, widened by `margin` of it, inside the old ones."""
    if not values:
        return param  # no top trial used it (a conditional param switched off): keep it whole
    if param.distribution == "choice":
        kept = tuple(c for c in param.choices if c in values)
        return dataclasses.replace(param, choices=kept)
    log = param.distribution == "log_uniform"
    scale = math.log if log else float
    lo, hi = scale(min(values)), scale(max(values))
    pad = margin * (hi - lo) if hi > lo else margin * (scale(param.high) - scale(param.low))
    low = max(scale(param.low), lo - pad)
    high = min(scale(param.high), hi + pad)
    if log:
        low, high = math.exp(low), math.exp(high)
    if param.distribution == "integer":
        low, high = math.floor(low), math.ceil(high)
        if low == high:  # integer bounds need low < high: widen by one inside the old ones
            high, low = (high + 1, low) if high < param.high else (high, low - 1)
        return dataclasses.replace(param, low=int(low), high=int(high))
    return dataclasses.replace(param, low=float(f"{low:.4g}"), high=float(f"{high:.4g}"))


def refine_space(
    space: SearchSpace, top: list[Config], name: str, margin: float = 0.25
) -> SearchSpace:
    """The space narrowed around the top trials' configs (coarse to fine), named `name`."""
    params = tuple(
        narrow_param(p, [freeze(c[p.key]) for c in top if p.key in c], margin) for p in space.params
    )
    return dataclasses.replace(space, name=name, params=params, seed=space.seed + 1)
