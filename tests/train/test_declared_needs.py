"""Rewards declare the sample fields and capabilities they read: checked at config load, attention wired by it."""
from __future__ import annotations

import sys

import pytest

from editkit.errors import ConfigError
from editkit.needs import NOTHING, Needs, needs_of


def _dataset(directory, columns: list[str]):
    """A ``save_to_disk`` dataset with only ``columns`` (strings): its metadata is all the check reads."""
    import datasets

    datasets.Dataset.from_dict({name: ["x"] for name in columns}).save_to_disk(str(directory))
    return directory


def test_built_in_rewards_declare_what_they_read():
    from train.rewards import REWARDS, SAMPLE_FIELDS, reward_needs

    for name in REWARDS.names():
        assert set(reward_needs(name).fields) <= set(SAMPLE_FIELDS), name
    assert reward_needs("attention_concentration") == Needs(("mask",), ("attention_maps",))
    assert "target_image" in reward_needs("edit_region").fields
    assert needs_of(lambda: None) is NOTHING  # undeclared: nothing extra


def test_a_reward_needing_mask_fails_at_config_load_on_a_dataset_without_masks(tmp_path):
    from train.config import load_config

    dataset = _dataset(tmp_path / "dataset", ["source_image", "instruction", "edit_type"])
    with pytest.raises(ConfigError) as error:
        load_config(None, [f"data.dataset={dataset}", "rewards.weights={pixel_consistency: 1.0}"])
    message = str(error.value)
    assert "reward 'pixel_consistency' needs field 'mask'" in message and "'mask'" in message
    assert "\n" not in message
    # a reward reading only what the dataset has loads
    load_config(None, [f"data.dataset={dataset}", "rewards.weights={clip_direction: 1.0}"])


def test_an_unset_target_column_fails_for_a_reward_needing_the_ground_truth(tmp_path, edit_dataset_dir):
    from train.config import load_config

    load_config(None, [f"data.dataset={edit_dataset_dir}", "rewards.weights={edit_region: 1.0}"])
    with pytest.raises(ConfigError, match="reward 'edit_region' needs field 'target_image'"):
        load_config(None, [f"data.dataset={edit_dataset_dir}", "data.target_column=null",
                           "rewards.weights={edit_region: 1.0}"])


def test_no_dataset_yet_means_nothing_to_compare(tmp_path):
    from train.config import load_config

    load_config(None, [f"data.dataset={tmp_path / 'absent'}", "rewards.weights={edit_region: 1.0}"])


@pytest.fixture
def plugin_rewards(tmp_path, monkeypatch):
    (tmp_path / "my_needs_rewards.py").write_text(
        "import torch\n"
        "from editkit.needs import Needs, declare_needs\n\n"
        "@declare_needs('mask', capabilities=('attention_maps',))\n"
        "def focus():\n"
        "    return lambda inputs: torch.zeros(inputs.images.shape[0])\n\n"
        "def plain():\n"
        "    return lambda inputs: torch.zeros(inputs.images.shape[0])\n\n"
        "def odd():\n"
        "    return plain()\n"
        "odd.needs = Needs(('masks',))\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "my_needs_rewards"
    from train.rewards import REWARDS

    for name in ("focus", "plain", "odd"):
        REWARDS.unregister(f"my_needs_rewards:{name}")
    sys.modules.pop("my_needs_rewards", None)


def test_a_plugin_declaring_attention_maps_turns_attention_recording_on(plugin_rewards, monkeypatch):
    from train.rollout import micro_batches

    built = []
    monkeypatch.setattr(micro_batches, "AttentionWiring", lambda *args: built.append(args) or "wiring")
    assert micro_batches.attention_wiring("adapter", {f"{plugin_rewards}:focus": 1.0}, 32, 32) == "wiring"
    assert built == [("adapter", 32, 32)]
    # undeclared: no capability, no hooks; the decision is the declaration, not the name
    assert micro_batches.attention_wiring("adapter", {f"{plugin_rewards}:plain": 1.0}, 32, 32) is None
    assert micro_batches.attention_wiring("adapter", {"pixel_consistency": 1.0}, 32, 32) is None
    assert micro_batches.attention_wiring("adapter", {"attention_concentration": 1.0}, 32, 32) == "wiring"


def test_a_plugin_s_declared_fields_are_checked_at_config_load(plugin_rewards, tmp_path):
    from train.config import load_config

    dataset = _dataset(tmp_path / "dataset", ["source_image", "instruction"])
    with pytest.raises(ConfigError, match=f"reward '{plugin_rewards}:focus' needs field 'mask'"):
        load_config(None, [f"data.dataset={dataset}", f"rewards.weights={{'{plugin_rewards}:focus': 1.0}}"])
    load_config(None, [f"data.dataset={dataset}", f"rewards.weights={{'{plugin_rewards}:plain': 1.0}}"])
    with pytest.raises(ConfigError, match="unknown sample field 'masks'"):
        load_config(None, [f"data.dataset={dataset}", f"rewards.weights={{'{plugin_rewards}:odd': 1.0}}"])


def test_a_malformed_needs_declaration_is_refused_by_the_registry_check(plugin_rewards):
    import importlib

    from train.rewards import REWARDS

    importlib.import_module(plugin_rewards).plain.needs = 3
    with pytest.raises(ConfigError, match="declares needs=3"):
        REWARDS.get(f"{plugin_rewards}:plain")
