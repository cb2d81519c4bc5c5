"""Advantages, GRPO, NFT and the region regularizer against their formulas."""
from __future__ import annotations

import torch

from tests.support.numerics import assert_close
from train.algorithms.advantages import AdvantageConfig, group_advantages
from train.algorithms.grpo import grpo_loss
from train.algorithms.nft import NFTConfig, nft_loss
from train.algorithms.regularizer import RegularizerConfig, region_regularizer, region_weights


def test_group_advantages_constructed():
    rewards = torch.tensor([1.0, 3.0, 2.0, 2.0, 0.0, float("nan"), 4.0, 8.0])
    groups = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    out = group_advantages(rewards, groups, AdvantageConfig(std="group", clip=5.0, eps=0.0))
    assert_close(out.values[:2], [-1.0, 1.0], accumulations=2, why="float32 (r - mean) / std over a group of 2")
    assert_close(out.values[6:], [-1.0, 1.0], accumulations=2, why="float32 (r - mean) / std over a group of 2")
    assert out.keep.tolist() == [True, True, False, False, False, False, True, True]  # zero-std and NaN filtered
    assert out.stats["filtered_groups"] == 2 and out.stats["nonfinite_rewards"] == 1
    glob = group_advantages(rewards, groups, AdvantageConfig(std="global", clip=0.5, eps=0.0))
    valid = rewards[torch.isfinite(rewards)]
    expected = (torch.tensor([1.0, 3.0]) - 2.0) / valid.std(unbiased=False)
    assert_close(glob.values[:2], expected.clamp(-0.5, 0.5), accumulations=len(valid),
                 why="float32 mean and std over the 7 finite rewards")


def test_grpo_on_policy_ratio_is_one_and_clips():
    log_prob = torch.randn(6)
    adv = torch.randn(6)
    loss, stats = grpo_loss(log_prob, log_prob.clone(), adv, torch.ones(6, dtype=torch.bool), 1e-4)
    assert stats["ratio_mean"].item() == 1.0
    assert_close(loss, (-adv).mean(), accumulations=6, why="float32 mean of 6 terms, ratio exactly 1")
    # a ratio above 1+eps with positive advantage is clipped (no gradient)
    new = torch.tensor([0.5], requires_grad=True)
    loss, _ = grpo_loss(new, torch.tensor([0.0]), torch.tensor([1.0]), torch.tensor([True]), 0.1)
    loss.backward()
    assert_close(loss, -1.1, dtype=torch.float32, accumulations=1, why="-(1 + 0.1) × 1, one float32 rounding")
    assert new.grad.item() == 0.0


def test_grpo_per_token_advantages():
    from train.algorithms.sde import gaussian_log_prob

    g = torch.Generator().manual_seed(0)
    mean, sample = torch.randn(2, 5, 3, generator=g), torch.randn(2, 5, 3, generator=g)
    std = torch.full((2, 1, 1), 0.5)
    per_token = gaussian_log_prob(sample, mean, std, per_token=True)
    assert per_token.shape == (2, 5)
    assert_close(per_token.mean(1), gaussian_log_prob(sample, mean, std), accumulations=15,
                 why="float32 log density: a mean over 5 tokens of means over 3 channels vs one over 15")
    token_adv = torch.randn(2, 5, generator=g)
    loss, stats = grpo_loss(per_token, per_token.clone(), token_adv, torch.ones(2, dtype=torch.bool), 1e-4)
    assert stats["ratio_mean"].item() == 1.0
    assert_close(loss, (-token_adv).mean(), accumulations=10, why="float32 mean over 2 × 5 token advantages")


def test_nft_loss_formula():
    g = torch.Generator().manual_seed(0)
    b = 4
    x0, eps, v_theta, v_old, v_ref = (torch.randn(b, 8, 3, generator=g, dtype=torch.float64) for _ in range(5))
    t = torch.rand(b, generator=g, dtype=torch.float64)
    adv = torch.randn(b, generator=g, dtype=torch.float64) * 3
    cfg = NFTConfig(beta=0.7, adv_max=2.0, ref_weight=0.1)
    x_t = (1 - t[:, None, None]) * x0 + t[:, None, None] * eps
    loss, _ = nft_loss(x_t, t, x0, v_theta, v_old, adv, cfg, v_ref=v_ref)
    expected = []
    for i in range(b):
        r = min(max(adv[i].item() / 2.0 / 2 + 0.5, 0.0), 1.0)
        vp = 0.7 * v_theta[i] + 0.3 * v_old[i]
        vn = 1.7 * v_old[i] - 0.7 * v_theta[i]
        ep, en = x_t[i] - t[i] * vp - x0[i], x_t[i] - t[i] * vn - x0[i]
        value = r * (ep**2).mean() / ep.abs().mean() + (1 - r) * (en**2).mean() / en.abs().mean()
        expected.append(value + 0.1 * ((v_theta[i] - v_ref[i]) ** 2).mean())
    assert_close(loss, torch.stack(expected), accumulations=24, growth="linear",
                 why="float32 loss from float64 inputs: means over 8 × 3 values vs the formula in float64")


def _region_setup():
    mask = torch.zeros(1, 10, 10, dtype=torch.bool)
    mask[:, 3:8, 3:8] = True
    bg_w, ed_w = region_weights(mask, radius=1, ring_weight=0.2)
    return mask, bg_w, ed_w


def test_region_weights_ring():
    mask, bg_w, ed_w = _region_setup()
    bg_w, ed_w = bg_w.view(10, 10), ed_w.view(10, 10)
    assert bg_w[0, 0] == 1 and ed_w[0, 0] == 0  # far background
    assert ed_w[5, 5] == 1 and bg_w[5, 5] == 0  # edit core
    for weight in (bg_w[3, 3], ed_w[3, 3], bg_w[2, 2]):  # on the boundary band
        assert_close(weight, 0.2, accumulations=1, why="the float32 ring weight 0.2, stored once")


def test_regularizer_zero_within_tau_and_gradients_stay_in_region():
    cfg = RegularizerConfig(enabled=True, lambda_background=1.0, lambda_edit=1.0, tau_positive=1e-3,
                            tau_negative=3e-2, erode_radius=1, ring_weight=0.2)
    mask, bg_w, ed_w = _region_setup()
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(1, 100, 4, generator=g)
    x_src = torch.randn(1, 100, 4, generator=g)
    # positive branch: background within tau -> 0
    close = (x0 + 0.01 * torch.randn(1, 100, 4, generator=g)).requires_grad_()
    loss, parts = region_regularizer(close, x_src + 1.0, x0, x_src, torch.ones(1), bg_w, ed_w, cfg)
    assert parts["reg_d_background"].item() < cfg.tau_positive and loss.item() == 0.0
    # positive branch far from x0: gradient only on background(+ring) tokens
    far = (x0 + torch.randn(1, 100, 4, generator=g)).requires_grad_()
    loss, _ = region_regularizer(far, x_src + 1.0, x0, x_src, torch.ones(1), bg_w, ed_w, cfg)
    loss.sum().backward()
    touched = far.grad.abs().sum(-1)[0] > 0
    assert loss.item() > 0 and touched.any()
    assert torch.equal(touched, bg_w[0] > 0)
    # negative branch equal to the source in the edit region: gradient only on edit(+ring) tokens
    neg = x_src.clone().requires_grad_()
    loss, _ = region_regularizer(x0.clone(), neg, x0, x_src + 0.0, torch.zeros(1), bg_w, ed_w, cfg)
    assert_close(loss, cfg.tau_negative, dtype=torch.float32, accumulations=1,
                 why="the hinge value tau_negative, one float32 rounding")
    neg.grad = None
    # at exactly zero distance the gradient of d is 0; move slightly off the source
    neg2 = (x_src + 0.01 * torch.randn(1, 100, 4, generator=g)).requires_grad_()
    loss, _ = region_regularizer(x0.clone(), neg2, x0, x_src, torch.zeros(1), bg_w, ed_w, cfg)
    loss.sum().backward()
    touched = neg2.grad.abs().sum(-1)[0] > 0
    assert torch.equal(touched, ed_w[0] > 0)
