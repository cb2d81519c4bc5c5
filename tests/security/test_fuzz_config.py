"""Property tests of the config loader: whatever the text or the values, the outcome is a config or a ConfigError
(one line), never another exception.

Derandomized (the same examples on every run) and small, so CI stays deterministic and fast; set
``EDITKIT_FUZZ_EXAMPLES`` (e.g. 5000) for a deeper run."""
from __future__ import annotations

import dataclasses
import os
import typing

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from editkit.config import apply_overrides, from_dict, parse_yaml
from editkit.errors import ConfigError

FUZZ = settings(derandomize=True, max_examples=int(os.environ.get("EDITKIT_FUZZ_EXAMPLES", 120)), deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])


def _config_classes() -> list[type]:
    from curate.stages.export import ExportParams
    from curate.stages.ingest import IngestParams
    from curate.stages.masks import MasksParams
    from curate.stages.rewrite import RewriteParams
    from curate.stages.score import ScoreParams
    from curate.stages.select import SelectParams
    from editkit.executors import ExecutorConfig
    from editkit.mllm.config import ClientConfig

    return [IngestParams, RewriteParams, ScoreParams, MasksParams, SelectParams, ExportParams, ExecutorConfig,
            ClientConfig]


CLASSES = _config_classes()


def _paths(cls: type, prefix: str = "", depth: int = 0) -> list[str]:
    """Dotted key paths of a config dataclass (nested sections included, 3 levels)."""
    out = []
    hints = typing.get_type_hints(cls, include_extras=False)
    for f in dataclasses.fields(cls):
        path = f"{prefix}{f.name}"
        out.append(path)
        hint = hints.get(f.name)
        options = [a for a in typing.get_args(hint) if dataclasses.is_dataclass(a)] or [hint]
        for option in options:
            if dataclasses.is_dataclass(option) and depth < 3:
                out += _paths(option, path + ".", depth + 1)
    return out


PATHS = sorted({p for cls in CLASSES for p in _paths(cls)})
NAMES = sorted({p.rsplit(".", 1)[-1] for p in PATHS})

scalars = (st.none() | st.booleans() | st.integers() | st.integers(-2, 2) | st.floats(allow_nan=True)
           | st.text(max_size=12) | st.sampled_from(["", "none", "openai", "local", "ray", "1e-4", "auto", "cpu"]))
keys = st.sampled_from(NAMES) | st.text(max_size=6) | st.integers(-3, 3) | st.booleans()
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=4),
                      max_leaves=16)
sections = st.dictionaries(st.sampled_from(NAMES), values, max_size=5)

TOKENS = ["a", "b", "client", "backend", "shard_size", ": ", ":", "\n", "  ", "    ", "- ", "-", "[", "]", "{", "}",
          ", ", "&x ", "*x", "&y ", "*y", "<<: ", "? ", "!!str ", "!!int ", "!!float ", "!!binary ", "!!set ",
          "!!timestamp ", "!!python/object:os.system ", "!custom ", "1e-4", "1_000", "0x1F", "0o17", "-.inf", ".nan",
          "2024-13-45", "2024-02-03", "12:30:00", "null", "~", "true", "no", "'", "\"", "\\u0000", "|", ">", "#",
          "---", "...", "%YAML 1.2\n", "%TAG ! x\n", "\t", "\x85", "\ufeff", "9" * 50, "é", "\U0001F600"]
yamlish = (st.lists(st.sampled_from(TOKENS), max_size=40).map("".join)
           | st.text(max_size=80))


def _is_config_error(error: BaseException) -> None:
    assert isinstance(error, ConfigError), f"{type(error).__name__}: {error}"
    message = str(error)
    assert message and "\n" not in message and len(message) < 2000, message


@FUZZ
@given(text=yamlish)
def test_any_text_parses_to_a_value_or_a_config_error(text):
    try:
        value = parse_yaml(text, "fuzz.yaml")
    except Exception as error:  # noqa: BLE001
        _is_config_error(error)
        assert str(error).startswith("fuzz.yaml: ")
        return
    for cls in CLASSES:
        section = value.get("a") if isinstance(value, dict) else value
        try:
            assert isinstance(from_dict(cls, section, "a", file="fuzz.yaml"), cls)
        except Exception as error:  # noqa: BLE001
            _is_config_error(error)


@FUZZ
@given(cls=st.sampled_from(CLASSES), section=sections | values)
def test_any_nested_values_give_a_config_or_a_config_error(cls, section):
    try:
        assert isinstance(from_dict(cls, section, "section", file="params.yaml"), cls)
    except Exception as error:  # noqa: BLE001
        _is_config_error(error)


one_line = st.text(st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp")), max_size=20)  # a shell argument


@FUZZ
@given(cls=st.sampled_from(CLASSES), path=st.sampled_from(PATHS) | one_line,
       text=st.sampled_from(["1", "-1", "0", "1e-4", "nan", "inf", "true", "null", "[1, 2]", "{a: 1}", "x", "",
                             "'q'", "&a [*a]", "[" * 120, "!!timestamp", "2024-13-45"]) | one_line)
def test_any_command_line_override_gives_a_config_or_a_config_error(cls, path, text):
    try:
        values = apply_overrides(cls, {}, [f"{path}={text}"])
        assert isinstance(from_dict(cls, values, "", file="command line"), cls)
    except Exception as error:  # noqa: BLE001
        _is_config_error(error)


def test_the_strategies_reach_nested_sections():
    assert "client.backend" in PATHS and "client" in NAMES


@pytest.mark.parametrize("text", ["a: &x [*x]", "a: !!binary '\u00e9'", "a: !!set {1: 2, [3]: 4}", "? [1]\n: 2",
                                  "a: !!timestamp 2024-99-99", "a: !!int x", "a: !!float x"])
def test_known_awkward_documents(text):
    with pytest.raises(ConfigError):
        parse_yaml(text, "fuzz.yaml")
