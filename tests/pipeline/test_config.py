from dataclasses import dataclass
from typing import Literal

import pytest

from pipeline.config import ParamError, parse_group, read_params


@dataclass(frozen=True)
class Example:
    rate: float = 0.1
    widths: tuple[int, ...] = (8,)
    mode: Literal["a", "b"] = "a"
    limit: int | None = None


def test_values_are_checked_and_widened():
    parsed = parse_group(Example, "ex", {"rate": 1, "widths": [4, 2], "mode": "b", "limit": None})
    assert parsed == Example(rate=1.0, widths=(4, 2), mode="b", limit=None)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"speed": 1}, "unknown key ex.speed"),
        ({"rate": "fast"}, "ex.rate must be a number"),
        ({"rate": True}, "ex.rate must be a number"),
        ({"widths": [4, "x"]}, r"ex.widths\[1\] must be an integer"),
        ({"mode": "c"}, "ex.mode must be one of a | b"),
        ({"limit": 2.5}, "ex.limit must be an integer"),
    ],
)
def test_bad_values_raise_a_param_error_naming_the_key(raw, message):
    with pytest.raises(ParamError, match=message):
        parse_group(Example, "ex", raw)


def test_a_group_that_is_not_a_mapping_is_rejected():
    with pytest.raises(ParamError, match="ex must be a mapping"):
        parse_group(Example, "ex", [1, 2])


def test_malformed_params_file_is_reported_not_raised_raw(tmp_path):
    (tmp_path / "params.yaml").write_text("data: [unclosed\n")
    with pytest.raises(ParamError, match="not valid YAML"):
        read_params(tmp_path / "params.yaml")
    with pytest.raises(ParamError, match="cannot read params file"):
        read_params(tmp_path / "missing.yaml")
