"""Configs that make no sense are refused when they are loaded, in one line naming the file and the key (exit 2
from the commands), instead of failing later with a traceback or, worse, running: NaN or negative learning rates,
negative LoRA ranks, empty steps, negative resolutions, zero training steps, negative image limits, absurd counts,
NaN tolerances."""
from __future__ import annotations

import pytest
from typer.testing import CliRunner

from editkit.config import load_section
from editkit.errors import ConfigError
from tests.support.config_errors import config_error


def _section_error(tmp_path, section: str, body: str):
    """``params.yaml`` holding ``body`` under ``section``, and the message its loading is refused with."""
    from editkit.config_cli import SECTIONS, resolve

    path = tmp_path / "params.yaml"
    message = config_error(path, f"{section}:\n  {body}\n", lambda p: load_section(resolve(SECTIONS[section]), section, p))
    return path, message


@pytest.mark.parametrize("body, key, problem", [
    ("optim: {learning_rate: .nan}\n", "optim.learning_rate", "must be > 0, <= 1, got nan"),
    ("optim: {learning_rate: -1.0e-4}\n", "optim.learning_rate", "must be > 0, <= 1, got -0.0001"),
    ("lora: {rank: -4}\n", "lora.rank", "must be > 0, got -4"),
    ("train: {groups_per_step: 0}\n", "train.groups_per_step", "must be >= 1, got 0"),
    ("data: {resolution: [-32, 32]}\n", "data.resolution[0]", "must be > 0, <= 8192, got -32"),
    ("train: {max_steps: -1}\n", "train.max_steps", "must be >= 1, got -1"),
    ("train: {max_steps: 0}\n", "train.max_steps", "must be >= 1, got 0"),  # would write an untrained LoRA
])
def test_trainer_config_refuses_nonsense_naming_file_and_key(tmp_path, body, key, problem):
    from train.config import load_config

    path = tmp_path / "train.yaml"
    assert config_error(path, body, load_config) == f"{path}: {key}: {problem}"


@pytest.mark.parametrize("override, line", [
    ("optim.learning_rate=nan", "error: command line: optim.learning_rate: must be > 0, <= 1, got nan"),
    ("lora.rank=-4", "error: command line: lora.rank: must be > 0, got -4"),
    ("train.max_steps=-1", "error: command line: train.max_steps: must be >= 1, got -1"),
    ("data.resolution=[-32, 32]", "error: command line: data.resolution[0]: must be > 0, <= 8192, got -32"),
])
def test_show_config_exits_2_with_one_line(override, line):
    from editkit.cli import app

    result = CliRunner().invoke(app, ["train", "show-config", override])
    assert result.exit_code == 2, result.output
    assert [text for text in result.output.splitlines() if text.strip()] == [line]


def test_show_config_of_a_file_with_a_nan_learning_rate_exits_2(tmp_path):
    from editkit.cli import app

    path = tmp_path / "train.yaml"
    path.write_text("optim:\n  learning_rate: .nan\n")
    result = CliRunner().invoke(app, ["train", "show-config", "--config", str(path)])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert result.output.strip() == f"error: {path}: optim.learning_rate: must be > 0, <= 1, got nan"


@pytest.mark.parametrize("section, body, key, problem", [
    ("ingest", "max_side: -100", "ingest.max_side", "must be >= 1, got -100"),
    ("ingest", "max_pixels: -1", "ingest.max_pixels", "must be >= 1, <= 89478485, got -1"),
    ("ingest", "max_pixels: 1000000000000", "ingest.max_pixels", "must be >= 1, <= 89478485, got 1000000000000"),
    ("ingest", "aspect_tolerance: .nan", "ingest.aspect_tolerance", "must be >= 0, <= 1, got nan"),
    ("sample", "n: 1000000000000000000000000000000", "sample.n",
     "must be >= 0, <= 1000000, got 1000000000000000000000000000000"),
    ("sample", "n: 1e30", "sample.n", "expected an integer, got float 1e+30"),
    ("masks", "diff: {threshold: -1}", "masks.diff.threshold", "must be >= 0, got -1"),
    ("select", "filters: {bg_ssim_min: .inf}", "select.filters.bg_ssim_min", "must be >= -1, <= 1, got inf"),
    ("rewrite", "client: {timeout_s: 0}", "rewrite.client.timeout_s", "must be > 0, got 0"),
])
def test_params_sections_refuse_nonsense_naming_file_and_key(tmp_path, section, body, key, problem):
    path, message = _section_error(tmp_path, section, body)
    assert message == f"{path}: {key}: {problem}"


@pytest.mark.parametrize("body, line", [
    ("ingest:\n  max_side: -100\n", "ingest.max_side: must be >= 1, got -100"),
    ("ingest:\n  aspect_tolerance: .nan\n", "ingest.aspect_tolerance: must be >= 0, <= 1, got nan"),
    ("ingest:\n  max_pixels: -1\n", "ingest.max_pixels: must be >= 1, <= 89478485, got -1"),
    ("sample:\n  n: 1e30\n", "sample.n: expected an integer, got float 1e+30"),
])
def test_curate_ingest_exits_2_with_one_line(tmp_path, body, line):
    from editkit.cli import app

    path = tmp_path / "params.yaml"
    path.write_text(body)
    result = CliRunner().invoke(app, ["curate", "ingest", "--params", str(path), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2, result.output
    assert [text for text in result.output.splitlines() if text.strip()] == [f"error: {path}: {line}"]
    assert not (tmp_path / "out").exists()


def test_reward_model_configs_are_held_to_ranges_and_choices(tmp_path):
    from editkit.config import load_file
    from editkit.errors import UserError
    from train.rrm.config import GCPORunConfig

    path = tmp_path / "gcpo.yaml"
    path.write_text("gcpo: {num_trajectories: 1}\n")
    with pytest.raises(UserError, match=r"gcpo\.num_trajectories: must be >= 2, got 1"):
        load_file(GCPORunConfig, path)
    path.write_text("data: {layout: pairz}\n")
    with pytest.raises(UserError, match=r"data\.layout: expected one of \['auto', 'pairs', 'editreward'\]"):
        load_file(GCPORunConfig, path)


def test_the_shipped_configs_are_all_in_range():
    from pathlib import Path

    from editkit.config_cli import FILES, SECTIONS, _kind_of, _load_file, resolve
    from editkit.config import load_yaml

    for section, spec in SECTIONS.items():
        load_section(resolve(spec), section, "params.yaml")
    for path in sorted(Path("train/configs").glob("*.yaml")):
        values = load_yaml(path)
        if "compute_environment" in values:  # accelerate's own launcher config
            continue
        kind = _kind_of(values, path)
        _load_file(kind, resolve(FILES[kind][0]), path, values)


@pytest.mark.parametrize("section, body, line", [
    ("select", "filters: {mask_area_min: 0.5, mask_area_max: 0.1}",
     "select.filters: mask_area_min (0.5) is above mask_area_max (0.1): no pair could pass"),
    ("rewrite", "client: {backoff_s: 5, backoff_max_s: 1}", "rewrite.client: backoff_max_s (1) is below backoff_s (5)"),
    ("sample", "jpeg_quality: [92, 70]", "sample: sample.jpeg_quality must be [low, high], got [92, 70]"),
])
def test_combinations_that_make_no_sense_are_refused(tmp_path, section, body, line):
    path, message = _section_error(tmp_path, section, body)
    assert message == f"{path}: {line}"


def test_the_ablation_data_must_leave_rows_to_train(tmp_path):
    from train.experiment.pretrain import load_pretrain_config

    with pytest.raises(ConfigError, match=r"data: limit \(3\) must exceed heldout \+ validation \+ rl \(48\)"):
        load_pretrain_config("train/configs/ablation_base.yaml", ["data.limit=3"])
