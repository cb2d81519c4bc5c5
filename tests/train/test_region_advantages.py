"""Edit-GRPO region-specific advantages: token masks, per-token advantages, loss equivalence, trainer wiring."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.support.numerics import assert_close, is_close
from train.algorithms.advantages import AdvantageConfig, group_advantages
from train.algorithms.grpo import grpo_loss
from train.algorithms.region_advantages import RegionAdvantageConfig, per_token_advantages, reward_mix, token_mask
from train.algorithms.sde import gaussian_log_prob

REPO_CONFIG = Path(__file__).resolve().parents[2] / "train" / "configs" / "tiny_kontext.yaml"


def test_token_mask_matches_block_majority():
    rng = np.random.default_rng(0)
    masks = rng.random((3, 12, 16)) < 0.5
    expected = masks.reshape(3, 6, 2, 8, 2).mean(axis=(2, 4)) > 0.5  # 2x2 pixel blocks per token, row-major
    got = token_mask(torch.from_numpy(masks), 6, 8)
    assert got.shape == (3, 48) and np.array_equal(got.numpy(), expected.reshape(3, 48))


def test_tokens_get_their_region_advantage():
    g = torch.Generator().manual_seed(1)
    groups = torch.arange(4).repeat_interleave(6)
    edit_r, keep_r = torch.randn(24, generator=g), torch.randn(24, generator=g)
    edit_r[3] = float("nan")  # a broken edit reward: never trained on, whatever its preservation reward
    keep_r[12:18] = 0.5  # a group with no preservation signal: its background tokens get 0, edit tokens still train
    config = AdvantageConfig()
    edit, preservation = group_advantages(edit_r, groups, config), group_advantages(keep_r, groups, config)
    tokens = torch.rand(24, 10, generator=g) < 0.4
    result = per_token_advantages(edit, preservation, tokens, torch.isfinite(edit_r) & torch.isfinite(keep_r))
    assert result.values.shape == (24, 10)
    for i in range(24):
        for t in range(10):
            expected = edit.values[i] if tokens[i, t] else preservation.values[i]
            assert result.values[i, t] == (expected if i != 3 else 0.0)
    assert not result.keep[3] and result.keep[12:18].all() and (result.values[12:18][~tokens[12:18]] == 0).all()
    assert_close(result.stats["edit_token_fraction"], tokens.float().mean(), dtype=torch.float32,
                 accumulations=tokens.numel(), why="a float32 mean over 240 token flags, in another order")


def test_equal_region_advantages_give_the_scalar_loss_and_gradient():
    g = torch.Generator().manual_seed(2)
    batch, tokens, channels = 4, 12, 3
    mean = torch.randn(batch, tokens, channels, generator=g, requires_grad=True)
    sample, std = torch.randn(batch, tokens, channels, generator=g), torch.tensor(0.8)
    scalar = torch.randn(batch, generator=g)
    same = group_advantages(scalar, torch.tensor([0, 0, 1, 1]), AdvantageConfig())
    keep = same.keep
    per_token = per_token_advantages(same, same, torch.rand(batch, tokens, generator=g) < 0.5, torch.ones(4, dtype=bool))
    assert torch.equal(per_token.keep, keep)
    # off-policy (ratio != 1): per-token advantages equal everywhere == the scalar advantage broadcast over tokens
    token_lp = gaussian_log_prob(sample, mean, std, per_token=True)
    old = token_lp.detach() + 1e-5 * torch.randn(batch, tokens, generator=g)
    loss_tokens, _ = grpo_loss(token_lp, old, per_token.values, per_token.keep, 1e-4)
    loss_scalar, _ = grpo_loss(token_lp, old, same.values, keep, 1e-4)
    assert_close(loss_tokens, loss_scalar, accumulations=tokens, why="per-token terms averaged over 12 tokens first")
    # on-policy: identical value and gradient to the per-sample (B,) log-prob loss the trainer uses by default
    grad_tokens, = torch.autograd.grad(grpo_loss(token_lp, token_lp.detach(), per_token.values, keep, 1e-4)[0], mean)
    sample_lp = gaussian_log_prob(sample, mean, std)
    loss_sample = grpo_loss(sample_lp, sample_lp.detach(), same.values, keep, 1e-4)[0]
    grad_sample, = torch.autograd.grad(loss_sample, mean)
    assert_close(grad_tokens, grad_sample, accumulations=tokens * channels,
                 why="the gradient through a mean over 12 tokens × 3 channels, grouped another way")
    assert grad_sample.abs().sum() > 0


def test_reward_mix_and_config_checks():
    parts = {"a": torch.tensor([1.0, 2.0]), "b": torch.tensor([3.0, float("nan")])}
    assert_close(reward_mix(parts, {"a": 2.0, "b": 0.5}, ["a"]), [2.0, 4.0], accumulations=1,
                 why="2 × a: one rounding")
    assert torch.isnan(reward_mix(parts, {"a": 2.0, "b": 0.5}, ["a", "b"])[1])
    with pytest.raises(ValueError, match="not in rewards.weights"):
        RegionAdvantageConfig(edit_rewards=["c"], preservation_rewards=["a"]).check({"a": 1.0})
    with pytest.raises(ValueError, match="both"):
        RegionAdvantageConfig(edit_rewards=["a"], preservation_rewards=["a"]).check({"a": 1.0})
    from train.config import load_config

    with pytest.raises(ValueError, match="GRPO objective only"):
        load_config(None, ["region_advantages.enabled=true", "objective.name=nft"])
    assert not load_config(None, []).region_advantages.enabled and not load_config(None, []).sampler.region_noise


def test_grpo_trainer_with_region_advantages_and_noise(tiny_kontext_dir, edit_dataset_dir, tiny_clip_dir, tmp_path):
    """One GRPO iteration with both switches: per-token ratio exactly 1 on-policy, members of a group share the
    initial noise outside the edit mask and differ inside it."""
    from train.config import load_config
    from train.trainers.grpo import GRPOTrainer

    clip_dir = tiny_clip_dir
    config = load_config(REPO_CONFIG, [
        f"model.path={tiny_kontext_dir}", f"data.dataset={edit_dataset_dir}", f"output_dir={tmp_path / 'run'}",
        "objective.name=grpo", "objective.regularizer.enabled=false", "logging.progress=false",
        "logging.tensorboard=false", "train.max_steps=1", "eval.every=0", "checkpoint.every=0",
        "rewards.weights={pixel_consistency: 1.0, clip_direction: 0.5}",
        f"rewards.options={{clip_direction: {{model: 'local-dir:{clip_dir}', device: cpu}}}}",
        "region_advantages.enabled=true", "sampler.region_noise=true"])
    trainer = GRPOTrainer(config)
    batch = trainer.make_batch(1)
    trainer.sample(batch, 1)
    noise, inside = batch.samples.states[0], trainer.token_masks(batch)
    assert batch.samples.log_probs[0].shape == noise.shape[:2]  # per-token old log-probs
    groups = batch.group_ids.cpu()
    for group in groups.unique():
        members = torch.nonzero(groups == group).flatten().tolist()
        first, outside = noise[members[0]], ~inside[members[0]]
        for other in members[1:]:
            assert torch.equal(noise[other][outside], first[outside])
            if inside[other].any():
                assert not is_close(noise[other][inside[other]], first[inside[other]], accumulations=1,
                                    why="independent normal draws differ by O(1), far beyond one rounding")
    trainer.fit()
    metrics = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert metrics[-1]["ratio_first"] == 1.0 and 0.0 < metrics[-1]["edit_token_fraction"] < 1.0
    assert np.isfinite(metrics[-1]["loss"])
