"""Config loading/overrides, the data sampler and split, bad inputs, and the reward mix."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.support.numerics import assert_close
from train.config import load_config
from train.data import EditDataset, GroupSampler, iteration_slots

CONFIGS = Path(__file__).resolve().parents[2] / "train" / "configs"


def test_configs_load_and_override():
    # every trainer config in train/configs/ loads: tests/train/test_qwen_adapter.py::test_every_train_config_validates
    config = load_config(CONFIGS / "tiny_kontext.yaml", ["objective.nft.beta=0.5", "data.resolution=[64, 48]"])
    assert config.objective.nft.beta == 0.5 and config.data.resolution == [64, 48]
    with pytest.raises(ValueError, match="unknown key"):
        load_config(CONFIGS / "tiny_kontext.yaml", ["objective.nft.betta=0.5"])
    with pytest.raises(ValueError, match="NFT"):
        load_config(None, ["objective.name=grpo", "objective.regularizer.enabled=true"])
    with pytest.raises(ValueError, match="key.sub=value"):
        load_config(None, ["objective.name"])


def test_sampler_is_resumable_and_slots_split_groups():
    sampler = GroupSampler(list(range(5)), seed=3)
    first = [sampler.next_prompts(2) for _ in range(4)]
    resumed = GroupSampler(list(range(5)), seed=3)
    resumed.next_prompts(2)
    state = resumed.state_dict()
    again = GroupSampler(list(range(5)), seed=3)
    again.load_state_dict(state)
    assert [again.next_prompts(2) for _ in range(3)] == first[1:]
    assert sorted(first[0] + first[1] + [first[2][0]]) == list(range(5))  # an epoch covers every row once
    slots = [iteration_slots([7, 9], step=1, group_size=3, process_index=k, num_processes=2) for k in range(2)]
    assert [s.row for s in slots[0]] == [7, 7, 7] and [s.row for s in slots[1]] == [9, 9, 9]
    spanning = [iteration_slots([7], 1, 4, k, 2) for k in range(2)]
    assert {s.group for s in spanning[0]} == {s.group for s in spanning[1]}  # one group over both processes
    with pytest.raises(ValueError, match="divisible"):
        iteration_slots([7], 1, 3, 0, 2)


def test_dataset_split_and_examples(edit_dataset_dir):
    from train.config import DataConfig

    data = EditDataset(DataConfig(dataset=str(edit_dataset_dir), resolution=[24, 32], eval_size=2), seed=0)
    assert len(data.eval_rows) == 2 and len(data.train_rows) == 5
    assert not set(data.eval_rows) & set(data.train_rows)
    with pytest.raises(ValueError, match="row 6: cannot read the source image"):
        data.example(6)
    example = data.example(0)
    assert example.source.shape == (3, 24, 32) and example.edit_mask.shape == (24, 32)
    assert example.edit_mask.dtype == torch.bool and example.prompt.startswith("recolour")
    with pytest.raises(FileNotFoundError, match="curate export"):
        EditDataset(DataConfig(dataset="/nonexistent/dataset"), seed=0)
    with pytest.raises(ValueError, match="lacks column"):
        EditDataset(DataConfig(dataset=str(edit_dataset_dir), mask_column="edit_mask"), seed=0)


def test_weighted_rewards_mix_and_registry():
    from train.rewards import REWARDS, RewardInputs, WeightedRewards, register_reward

    @register_reward("test_constant")
    def constant(value: float = 1.0):
        return lambda inputs: torch.full((inputs.images.shape[0],), value)

    try:
        mix = WeightedRewards({"test_constant": 0.5}, {"test_constant": {"value": 4.0}})
        inputs = RewardInputs(torch.zeros(3, 3, 8, 8), torch.zeros(3, 3, 8, 8), torch.zeros(3, 8, 8, dtype=torch.bool),
                              ["a"] * 3, ["t"] * 3)
        total, parts = mix(inputs)
        assert total.tolist() == [2.0] * 3 and parts["test_constant"].tolist() == [4.0] * 3
    finally:
        REWARDS.pop("test_constant")
    with pytest.raises(KeyError, match="unknown reward"):
        WeightedRewards({"no_such_reward": 1.0})


def test_pixel_consistency_reward_formula():
    pytest.importorskip("editkit.metrics")
    from editkit.metrics import masked_psnr, masked_ssim
    from train.rewards import RewardInputs, WeightedRewards

    g = torch.Generator().manual_seed(0)
    sources = torch.rand(3, 3, 32, 32, generator=g)
    images = (sources + 0.05 * torch.randn(3, 3, 32, 32, generator=g)).clamp(0, 1)
    images[0] = sources[0]  # identical background: PSNR is infinite -> clipped to 1
    masks = torch.zeros(3, 32, 32, dtype=torch.bool)
    masks[:, 8:20, 8:20] = True
    masks[2] = True  # nothing left to measure -> NaN
    total, _ = WeightedRewards({"pixel_consistency": 1.0})(RewardInputs(images, sources, masks, ["x"] * 3, ["t"] * 3))
    region = ~masks[1:2]
    psnr = float(torch.as_tensor(masked_psnr(images[1:2], sources[1:2], region)).reshape(-1)[0])
    ssim = float(torch.as_tensor(masked_ssim(images[1:2], sources[1:2], region)).reshape(-1)[0])
    assert_close(total[1], 0.35 * ssim + 0.65 * min(max(psnr / 40, 0), 1), dtype=torch.float32, accumulations=4,
                 growth="linear", why="the same PSNR and SSIM (of float32 images) mixed: a weighted sum of 2, / 40")
    assert_close(total[0], 1.0, accumulations=2, why="the clipped PSNR term and SSIM 1 weighted: 0.35 + 0.65")
    assert torch.isnan(total[2])


def test_clip_direction_reward_with_tiny_clip(tiny_clip_dir):
    from train.rewards import RewardInputs, WeightedRewards

    model_dir = tiny_clip_dir
    mix = WeightedRewards({"clip_direction": 1.0}, {"clip_direction": {"model": f"local-dir:{model_dir}",
                                                                        "device": "cpu"}})
    g = torch.Generator().manual_seed(0)
    sources = torch.rand(2, 3, 32, 32, generator=g)
    images = torch.stack([torch.rand(3, 32, 32, generator=g), sources[1]])  # second one did not move at all
    total, _ = mix(RewardInputs(images, sources, torch.zeros(2, 32, 32, dtype=torch.bool), ["a red cube"] * 2,
                                ["t"] * 2))
    assert -1.0 <= total[0].item() <= 1.0 and torch.isnan(total[1])
