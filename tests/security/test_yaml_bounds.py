"""Configs that cannot hurt: every YAML file goes through one bounded loader (editkit.config.parse_yaml), and error
messages never build a full repr of what they describe.

Outcomes are asserted on memory (tracemalloc) and on the refusal, never on timings."""
from __future__ import annotations

import ast
import tracemalloc
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from editkit.config import (MAX_YAML_DEPTH, MAX_YAML_VALUES, _describe_value, apply_overrides, from_dict, load_file,
                            load_section, load_yaml, parse_yaml)
from editkit.errors import ConfigError
from tests.support.config_errors import config_error

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("editkit", "curate", "annotate", "benchmarks", "train")
MEMORY_BOUND = 16 << 20  # bytes a refused bomb may allocate while it is read (it is ~500 bytes of text)


def alias_bomb(levels: int) -> str:
    """The "billion laughs": 9 lists of 9 aliases of the level below; ``levels`` = 9 stands for 9^10 strings."""
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, levels + 1)]
    return "\n".join(lines) + "\n"


@dataclass
class Stage:
    steps: int = 10
    names: list[str] = field(default_factory=list)


@dataclass
class Section:
    stage: Stage = field(default_factory=Stage)
    shard_size: int = 1000


def _peak(call) -> tuple[object, int]:
    tracemalloc.start()
    try:
        try:
            outcome = call()
        except Exception as error:  # noqa: BLE001  (the outcome is checked by the caller)
            outcome = error
        return outcome, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("levels", [9, 10])
def test_an_alias_bomb_is_refused_with_bounded_memory_and_one_line_naming_the_file(tmp_path, levels):
    """Before: a 413-byte params.yaml with 9 levels cost 36 s and 3.17 GB in the error message builder."""
    path = tmp_path / "params.yaml"
    path.write_text(alias_bomb(levels) + f"section:\n  shard_size: *a{levels}\n")
    assert len(path.read_bytes()) < 700
    error, peak = _peak(lambda: load_section(Section, "section", path))
    assert isinstance(error, ConfigError), error
    message = str(error)
    assert message.startswith(f"{path}: refused: ") and f"more than {MAX_YAML_VALUES} values" in message
    assert "\n" not in message and len(message) < 300
    assert peak < MEMORY_BOUND, peak


def test_the_bomb_is_refused_on_the_command_line_too(tmp_path):
    from typer.testing import CliRunner

    from editkit.cli import app

    path = tmp_path / "params.yaml"
    path.write_text(alias_bomb(9) + "ingest:\n  shard_size: *a9\n")
    result = CliRunner().invoke(app, ["curate", "ingest", "--params", str(path), "--out", str(tmp_path / "o")])
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2 and len(lines) == 1 and lines[0].startswith(f"error: {path}: refused"), result.output


def test_a_shared_python_structure_is_described_without_expanding_it():
    """The error builder is bounded whatever it is given: 9 levels of 9 references (9^9 leaves) as a value."""
    value: object = "lol"
    for _ in range(9):
        value = [value] * 9
    error, peak = _peak(lambda: from_dict(Section, {"shard_size": value}, "section", file="params.yaml"))
    assert isinstance(error, ConfigError) and "section.shard_size: expected an integer, got list [[[[" in str(error)
    assert peak < MEMORY_BOUND and len(str(error)) < 200
    assert _describe_value("x" * 10_000_000).endswith("...") and len(_describe_value(list(range(10**6)))) < 80
    assert _describe_value({"a": 1, "b": [1, 2]}) == "dict {'a': 1, 'b': [1, 2]}"  # small values as before
    assert _describe_value(2 ** 100_000) == "int <an integer of 100001 bits>"
    loop: list = []
    loop.append(loop)
    assert _describe_value(loop).startswith("list [[[[")


@pytest.mark.parametrize("text, expected", [
    ("a: &a [1, *a]\n", "refused: a recursive alias (line 1)"),
    ("a: " + "[" * (MAX_YAML_DEPTH + 1) + "]" * (MAX_YAML_DEPTH + 1) + "\n", f"deeper than {MAX_YAML_DEPTH} levels"),
    ("a: 2024-13-45\n", "not valid YAML: month must be in 1..12"),
    ("a: " + "1" * 5000 + "\n", "not valid YAML: Exceeds the limit"),
    ("a: !!python/object/apply:os.system [echo hi]\n", "could not determine a constructor"),
    ("a: [1\nb: 2\n", "not valid YAML: expected ',' or ']'"),
    ("{[1]: 2}\n", "found unhashable key (line 1, column 2)"),
    ("a: \x00\n", "special characters are not allowed"),
])
def test_every_bad_document_is_one_config_error_naming_the_file(tmp_path, text, expected):
    path = tmp_path / "bad.yaml"
    message = config_error(path, text, load_yaml)
    assert message.startswith(f"{path}: ") and expected in message and "\n" not in message and len(message) < 400


def test_a_file_that_is_not_utf8_is_a_config_error(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_bytes(b"a: \xff\xfe\n")
    with pytest.raises(ConfigError, match=r"params.yaml: not UTF-8 text \(byte 3\)"):
        load_yaml(path)


def test_aliases_and_merge_keys_within_the_bounds_work_and_are_copies(tmp_path):
    data = parse_yaml("base: &b {steps: 3, names: [x]}\nsection:\n  stage:\n    <<: *b\n    steps: 5\n"
                      "other: *b\n")
    assert data["section"]["stage"] == {"steps": 5, "names": ["x"]} and data["other"] == {"steps": 3, "names": ["x"]}
    assert data["other"] is not data["base"] and data["other"]["names"] is not data["base"]["names"]
    path = tmp_path / "run.yaml"
    path.write_text("stage: &s {steps: 3}\nextra: *s\n")
    values = apply_overrides(Section, load_yaml(path), ["stage.steps=7"])  # an override changes one place only
    assert values == {"stage": {"steps": 7}, "extra": {"steps": 3}}
    just_enough = "a: &a [" + ", ".join(["1"] * 999) + "]\nb: [" + ", ".join(["*a"] * 98) + "]\n"
    assert len(parse_yaml(just_enough)["b"]) == 98  # 99 x 1000 values: within MAX_YAML_VALUES
    assert isinstance(load_file(Section, None, ["stage.names=[a, b]"]), Section)


def _yaml_calls(path: Path) -> list[str]:
    """``yaml.<loader>(...)`` calls and loader imports (``from yaml import safe_load``) in one source file."""
    loaders = {"load", "safe_load", "unsafe_load", "full_load", "load_all", "safe_load_all", "unsafe_load_all",
               "full_load_all", "compose", "compose_all", "parse", "scan"}
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr in loaders and isinstance(node.value, ast.Name) \
                and node.value.id in ("yaml", "ruamel"):
            found.append(f"{path.relative_to(ROOT)}:{node.lineno}: yaml.{node.attr}")
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "yaml":
            names = [alias.name for alias in node.names if alias.name in loaders or "Loader" in alias.name]
            found += [f"{path.relative_to(ROOT)}:{node.lineno}: from yaml import {name}" for name in names]
    return found


def test_no_yaml_is_read_outside_the_one_loader():
    """Every YAML the packages read goes through editkit.yaml_io.parse_yaml (bounded aliases, safe tags)."""
    calls = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            calls += _yaml_calls(path)
    allowed = {"editkit/yaml_io.py"}  # parse_yaml itself (it drives the loader class, no yaml.load call)
    stray = [call for call in calls if call.split(":")[0] not in allowed]
    assert not stray, "read YAML with editkit.config.parse_yaml / load_yaml instead:\n" + "\n".join(stray)
    assert _yaml_calls(ROOT / "editkit/yaml_io.py") == []


def test_the_loader_check_finds_a_stray_call(tmp_path, monkeypatch):
    source = ROOT / "train" / "_stray_yaml_probe.py"
    monkeypatch.setattr(Path, "rglob", lambda self, pattern: iter([source]))
    monkeypatch.setattr(Path, "read_text", lambda self, encoding=None: "import yaml\nx = yaml.safe_load('a: 1')\n"
                        "from yaml import unsafe_load\n")
    assert sorted(_yaml_calls(source)) == ["train/_stray_yaml_probe.py:2: yaml.safe_load",
                                   "train/_stray_yaml_probe.py:3: from yaml import unsafe_load"]
    with pytest.raises(AssertionError, match="yaml.safe_load"):
        test_no_yaml_is_read_outside_the_one_loader()
