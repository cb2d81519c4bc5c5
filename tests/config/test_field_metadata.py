"""Every field of every config class explains itself: help text that says more than the name, ranges and choices
that the loader checks, and the mechanism (attribute docstrings, ``Annotated[T, Range(...)]``) behind it."""
from __future__ import annotations

import dataclasses
import math
import re
import typing
from dataclasses import dataclass, field
from typing import Annotated, Literal, Optional

import pytest

from editkit.config import apply_overrides, from_dict, load_file
from editkit.config_cli import FILES, LIST_ITEMS, SECTIONS, resolve
from editkit.config_meta import Range, check_fields, field_infos, help_of, range_of, strip
from editkit.errors import ConfigError


def config_classes() -> list[type]:
    """Every dataclass a shipped config reaches: params.yaml sections, trainer files, their nested sections."""
    seen: dict[type, None] = {}

    def walk(cls: type) -> None:
        if cls in seen:
            return
        seen[cls] = None
        hints = typing.get_type_hints(cls, include_extras=True)
        for f in dataclasses.fields(cls):
            stack = [hints[f.name]]
            while stack:
                hint = strip(stack.pop())[0]
                if dataclasses.is_dataclass(hint):
                    walk(hint)
                stack.extend(a for a in typing.get_args(hint) if a is not Ellipsis)

    for spec in [*SECTIONS.values(), *(spec for spec, _ in FILES.values()), *LIST_ITEMS.values()]:
        walk(resolve(spec))
    return list(seen)


CLASSES = config_classes()
FIELDS = [(cls, f.name) for cls in CLASSES for f in dataclasses.fields(cls) if f.init]


def _words(text: str) -> list[str]:
    return [w for w in re.split(r"[^0-9A-Za-z]+", text.lower()) if w]


def test_the_inventory_is_the_whole_config_surface():
    assert len(CLASSES) >= 60 and len(FIELDS) >= 390, (len(CLASSES), len(FIELDS))


@pytest.mark.parametrize("cls, name", FIELDS, ids=[f"{c.__module__}.{c.__name__}.{n}" for c, n in FIELDS])
def test_every_field_has_real_help(cls, name):
    text = help_of(cls, name)
    where = f"{cls.__module__}.{cls.__name__}.{name}"
    assert text.strip(), f"{where}: no help (a docstring under the field)"
    assert len(text.split()) >= 3, f"{where}: help {text!r} is shorter than 3 words"
    assert set(_words(text)) - set(_words(name)), f"{where}: help {text!r} only rewords the name"


def test_string_fields_with_fixed_choices_are_literals():
    """The choices the docs list for these fields are checked by the loader (Literal), not by hand."""
    literal = {f"{c.__name__}.{n}" for c, n in FIELDS
               if "Literal[" in str(typing.get_type_hints(c, include_extras=True)[n])}
    for key in ("SamplerConfig.sde", "SamplerConfig.solver", "DataConfig.resample", "AdvantageConfig.std",
                "AdvantageConfig.filter", "NFTConfig.weighting", "RegularizerConfig.grid", "MasksParams.mode",
                "GroundingParams.dtype", "BenchParams.layout", "MetricsParams.convention", "ExecutorConfig.kind",
                "GCPOConfig.aggregation", "LoopConfig.mixed_precision", "TrainLoopConfig.mixed_precision"):
        assert key in literal, key
    assert len(literal) >= 17


def test_numeric_fields_mostly_have_ranges():
    numeric = [(c, n) for c, n in FIELDS
               if strip(typing.get_type_hints(c, include_extras=True)[n])[0] in (int, float, Optional[int],
                                                                                  Optional[float])]
    ranged = [(c, n) for c, n in numeric if range_of(typing.get_type_hints(c, include_extras=True)[n])]
    unranged = sorted(f"{c.__name__}.{n}" for c, n in set(numeric) - set(ranged))
    # the only numbers without a range (any finite value makes sense): a reward mean, whose scale is the reward's,
    # and score bounds whose relation __post_init__ checks instead
    assert unranged == ["AdvantageConfig.ban_mean", "FormatConfig.score_max", "FormatConfig.score_min"], unranged


# ------------------------------------------------------------------------------------------------ the mechanism
@dataclass
class Inner:
    rate: Annotated[float, Range(gt=0, le=1)] = 0.5
    """the rate of something"""


@dataclass
class Outer:
    steps: Annotated[int, Range(ge=1)] = 3
    """how many steps to run"""
    size: Annotated[list[int], Range(gt=0)] = field(default_factory=lambda: [8, 8])
    """height and width in pixels"""
    weights: Annotated[dict[str, float], Range(ge=0)] = field(default_factory=dict)
    """name to weight mapping"""
    limit: Annotated[Optional[int], Range(ge=0)] = None
    """an optional cap on rows"""
    scale: float = 1.0
    """any finite scale factor"""
    loose: Annotated[float, Range(allow_nan=True, allow_inf=True)] = 0.0
    """may be infinite or nan"""
    mode: Literal["a", "b"] = "a"
    """which of two modes"""
    inner: Inner = field(default_factory=Inner)
    """a nested section of settings"""


@pytest.mark.parametrize("values, message", [
    ({"steps": 0}, "f.yaml: steps: must be >= 1, got 0"),
    ({"size": [-32, 32]}, "f.yaml: size[0]: must be > 0, got -32"),
    ({"weights": {"a": -1}}, "f.yaml: weights.a: must be >= 0, got -1"),
    ({"limit": -1}, "f.yaml: limit: must be >= 0, got -1"),
    ({"scale": math.nan}, "f.yaml: scale: must be a finite number, got nan"),
    ({"scale": math.inf}, "f.yaml: scale: must be a finite number, got inf"),
    ({"inner": {"rate": math.nan}}, "f.yaml: inner.rate: must be > 0, <= 1, got nan"),
    ({"inner": {"rate": 2}}, "f.yaml: inner.rate: must be > 0, <= 1, got 2"),
    ({"mode": "c"}, "f.yaml: mode: expected one of ['a', 'b'], got str 'c'"),
])
def test_ranges_are_checked_at_load_with_one_line_naming_file_and_key(values, message):
    with pytest.raises(ConfigError) as info:
        from_dict(Outer, values, file="f.yaml")
    assert str(info.value) == message


def test_annotated_fields_load_like_their_type():
    config = from_dict(Outer, {"steps": 2, "size": [4, 6], "limit": None, "loose": math.inf, "mode": "b",
                               "inner": {"rate": 1}})
    assert (config.steps, config.size, config.limit, config.loose, config.mode, config.inner.rate) == \
        (2, [4, 6], None, math.inf, "b", 1)
    assert math.isnan(from_dict(Outer, {"loose": math.nan}).loose)
    overridden = from_dict(Outer, apply_overrides(Outer, {}, ["inner.rate=0.25", "size=[2, 3]", "mode=b"]))
    assert (overridden.inner.rate, overridden.size, overridden.mode) == (0.25, [2, 3], "b")
    with pytest.raises(ConfigError, match="command line: inner.rate: must be > 0, <= 1, got nan"):
        load_file(Outer, None, ["inner.rate=nan"])


def test_unknown_keys_suggest_the_nearest_one():
    with pytest.raises(ConfigError, match=r"unknown key inner\.rtae; known: \['rate'\] \(did you mean rate\?\)"):
        from_dict(Outer, {"inner": {"rtae": 1}}, file="f.yaml")
    with pytest.raises(ConfigError, match=r"\(did you mean steps for stepz\?\)"):
        from_dict(Outer, {"stepz": 1, "sise": 2})
    with pytest.raises(ConfigError, match=r"unknown key inner\.rat; .*\(did you mean rate\?\)"):
        apply_overrides(Outer, {}, ["inner.rat=1"])


def test_check_fields_holds_dataclasses_built_in_code_to_the_same_ranges():
    check_fields(Outer())
    for bad, message in ((Outer(steps=0), "steps: must be >= 1"), (Outer(mode="z"), "mode: expected one of"),
                         (Outer(size=[1, -1]), "size: must be > 0"), (Outer(scale=math.nan), "scale: must be")):
        with pytest.raises(ValueError, match=message):
            check_fields(bad)


def test_field_infos_lists_sections_then_their_fields():
    rows = {row.name: row for row in field_infos(Outer)}
    assert rows["inner"].section and rows["inner.rate"].range == "> 0, <= 1, finite"
    assert rows["mode"].type == '"a" | "b"' and rows["size"].type == "list[int]" and rows["size"].range == "> 0"
    assert rows["limit"].type == "int | null" and rows["scale"].range == "finite" and rows["loose"].range == ""
    assert rows["steps"].help == "how many steps to run" and rows["steps"].default == 3


def test_help_is_the_docstring_under_a_field_inherited_and_wrapped():
    @dataclass
    class Base:
        speed: float = 1.0
        """how fast the thing
        moves, in metres per second"""
        unexplained: int = 0

    @dataclass
    class Child(Base):
        speed: float = 2.0  # a new default keeps the base's help
        extra: bool = False
        """a field only the child has"""

    rows = {row.name: row.help for row in field_infos(Child)}
    assert rows == {"speed": "how fast the thing moves, in metres per second", "unexplained": "",
                    "extra": "a field only the child has"}
