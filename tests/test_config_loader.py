"""The typed config loader (editkit.config): keys, value types, nested sections, overrides, messages."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Optional

import pytest

from editkit.config import apply_overrides, from_dict, load_file, load_section
from editkit.errors import ConfigError, UserError


@dataclass
class Stage:
    learning_rate: float = 1e-3
    steps: int = 10


@dataclass
class Section:
    mode: Literal["diff", "grounded"] = "diff"
    stage: Stage = field(default_factory=lambda: Stage(learning_rate=2e-3))
    extra: Optional[Stage] = None
    sizes: list[int] = field(default_factory=lambda: [1, 2])
    pair: tuple[int, int] = (3, 4)
    weights: dict[str, float] = field(default_factory=dict)
    name: Optional[str] = "x"
    enabled: bool = False


def write(tmp_path, text):
    path = tmp_path / "params.yaml"
    path.write_text(text)
    return path


def test_unknown_key_names_the_key_and_the_file(tmp_path):
    path = write(tmp_path, "section:\n  stage:\n    stepz: 3\n")
    with pytest.raises(ConfigError) as info:
        load_section(Section, "section", path)
    message = str(info.value)
    assert str(path) in message and "section.stage.stepz" in message and "steps" in message
    assert isinstance(info.value, UserError) and "\n" not in message


@pytest.mark.parametrize("text, key, expected", [
    ("stage: {learning_rate: fast}", "section.stage.learning_rate", "a number"),  # str for float
    ("stage: {steps: [1, 2]}", "section.stage.steps", "an integer"),  # list for int
    ("mode: nonsense", "section.mode", "one of ['diff', 'grounded']"),  # bad Literal
    ("enabled: 1", "section.enabled", "true/false"),  # int for bool
    ("sizes: [1, two]", "section.sizes[1]", "an integer"),
    ("pair: [1, 2, 3]", "section.pair", "a list of 2 values"),
    ("weights: {a: heavy}", "section.weights.a", "a number"),
    ("stage: 3", "section.stage", "Stage section"),
])
def test_wrong_value_types_are_errors(tmp_path, text, key, expected):
    path = write(tmp_path, "section:\n  " + text + "\n")
    with pytest.raises(ConfigError) as info:
        load_section(Section, "section", path)
    assert str(path) in str(info.value) and key in str(info.value) and expected in str(info.value)


def test_nested_sections_merge_into_their_defaults_and_types_convert(tmp_path):
    path = write(tmp_path, "section:\n  stage: {steps: 5}\n  extra: {steps: 7}\n  pair: [5, 6]\n"
                           "  weights: {a: 1, b: 0.5}\n  name: null\n")
    section = load_section(Section, "section", path)
    assert section.stage == Stage(learning_rate=2e-3, steps=5)  # the field's default keeps the keys not given
    assert section.extra == Stage(steps=7) and section.pair == (5, 6) and section.name is None
    assert section.weights == {"a": 1, "b": 0.5}
    assert from_dict(Section, {"extra": {}}).extra is None  # an optional section given as {} is off
    assert load_section(Section, "missing", path) == Section()


def test_yaml_exponent_floats_are_numbers(tmp_path):
    path = write(tmp_path, "section:\n  stage: {learning_rate: 1e-4}\n")
    assert load_section(Section, "section", path).stage.learning_rate == 1e-4


def test_overrides_are_parsed_by_the_field_type():
    values = apply_overrides(Section, {}, [
        "stage.learning_rate=1e-4", "stage.steps=20", "enabled=true", "name=null", "sizes=[4, 5]", "mode=grounded",
        "weights.pixel=0.25", "extra={steps: 2}"])
    section = from_dict(Section, values)
    assert isinstance(section.stage.learning_rate, float) and section.stage.learning_rate == 1e-4
    assert section.stage.steps == 20 and section.enabled is True and section.name is None
    assert section.sizes == [4, 5] and section.mode == "grounded" and section.weights == {"pixel": 0.25}
    assert section.extra == Stage(steps=2)
    assert from_dict(Section, apply_overrides(Section, {}, ["enabled=False", "name=1e-4"])).name == "1e-4"
    for bad, message in (("stage.learning_rate=fast", "a number"), ("stage.stepz=1", "unknown key stage.stepz"),
                         ("enabled=maybe", "true or false"), ("mode=other", "one of"), ("steps", "key.sub=value"),
                         ("sizes=[1, x]", "an integer")):
        with pytest.raises(ConfigError, match=message):
            apply_overrides(Section, {}, [bad])


def test_load_file_with_overrides_and_file_errors(tmp_path):
    path = write(tmp_path, "stage: {steps: 3}\n")
    assert load_file(Section, path, ["stage.learning_rate=1e-4"]).stage == Stage(learning_rate=1e-4, steps=3)
    assert load_file(Section, None, ["enabled=yes"]).enabled is True
    with pytest.raises(ConfigError, match="not found"):
        load_file(Section, tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_file(Section, write(tmp_path, "- 1\n- 2\n"))


def test_trainer_config_learning_rate_override_is_a_float_before_any_model_loads(tmp_path):
    from train.config import load_config

    config = load_config(None, ["optim.learning_rate=1e-4", "logging.wandb=false", "lora.init_from=null"])
    assert isinstance(config.optim.learning_rate, float) and config.optim.learning_rate == 1e-4
    path = write(tmp_path, "optim: {learning_rate: fast}\n")
    with pytest.raises(ConfigError, match=f"{path}: optim.learning_rate: expected a number"):
        load_config(path)
    with pytest.raises(ConfigError, match="rewards.options.mllm.client.endpont"):  # reward options are typed too
        load_config(None, ["rewards.weights={mllm: 1.0}", "rewards.options.mllm.client.endpont=http://x"])
    with pytest.raises(ConfigError, match="rewards.options.pixel_consistency.ssim_weight"):
        load_config(None, ["rewards.options.pixel_consistency.ssim_weight=high"])
    with pytest.raises(ConfigError, match="unknown reward 'pixels'"):
        load_config(None, ["rewards.weights={pixels: 1.0}"])


def test_pretrain_config_loads_through_the_same_loader(tmp_path):
    from train.experiment.pretrain import load_pretrain_config

    config = load_pretrain_config(None, ["vae.steps=3"])
    assert config.vae.steps == 3 and config.vae.learning_rate == 2e-3  # the section's own default is kept
    with pytest.raises(ConfigError, match="architecture.num_layerz"):
        load_pretrain_config(None, ["architecture.num_layerz=2"])


def test_a_bad_params_file_exits_2_with_one_line(tmp_path):
    from typer.testing import CliRunner

    from editkit.cli import app

    path = write(tmp_path, "ingest:\n  shard_size: many\n")
    result = CliRunner().invoke(app, ["curate", "ingest", "--params", str(path), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert lines == [f"error: {path}: ingest.shard_size: expected an integer, got str 'many'"]
    result = CliRunner().invoke(app, ["train", "show-config", "optim.learning_rate=fast"])
    assert result.exit_code == 2 and "optim.learning_rate" in result.output and "Traceback" not in result.output
