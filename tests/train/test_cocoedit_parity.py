"""CoCoEdit recipe parity: our loss assembly, advantages and sampler against independent re-implementations of the
formulas in CoCoEdit's public training code (docs/cocoedit.md), for the settings of both shipped configs.

The references below are written from the formulas, on the UNPACKED latent grid (CoCoEdit's route), while our code
works on packed tokens with packed per-pixel weights: agreement checks the packing as well as the algebra.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tests.support.numerics import assert_close
from train.algorithms.advantages import group_advantages
from train.config import load_config
from train.rollout.ode_solvers import dpm2_sample
from train.algorithms.old_policy import LaggedPolicy
from train.algorithms.regularizer import latent_region_weights
from train.trainers.nft import unit_loss

CONFIGS = Path(__file__).resolve().parents[2] / "train" / "configs"
PARITY = ["kontext.yaml", "qwen_image_edit.yaml"]


# ---------------------------------------------------------------- the reference (CoCoEdit's formulas)
def unpack(tokens, h, w):
    """(B, L, 64) packed -> (B, 16, h, w), Flux/Qwen layout."""
    b, _, c4 = tokens.shape
    return tokens.view(b, h // 2, w // 2, c4 // 4, 2, 2).permute(0, 3, 1, 4, 2, 5).reshape(b, c4 // 4, h, w)


def erode(m, r):
    return 1.0 - F.max_pool2d(1.0 - m, kernel_size=2 * r + 1, stride=1, padding=r)


def masked_mean(values, valid):
    return values.sum() * 0 if valid.sum() == 0 else values.sum() / valid.sum()


def cocoedit_loss(x0, x_t, t, v_theta, v_old, v_ref, adv, valid, keep_pixels, x_src, c):
    """One backward unit's total loss: L_pol + L_KL + L_reg (CoCoEdit training code, written from its formula)."""
    beta, amax, kl, reg = c["beta"], c["amax"], c["kl"], c["reg"]
    t3 = t.view(-1, 1, 1)
    r = torch.clamp(adv.clamp(-amax, amax) / amax / 2.0 + 0.5, 0, 1)
    v_pos = beta * v_theta + (1 - beta) * v_old
    v_neg = (1 + beta) * v_old - beta * v_theta
    x_pos, x_neg = x_t - t3 * v_pos, x_t - t3 * v_neg
    with torch.no_grad():
        w_pos = (x_pos.double() - x0.double()).abs().mean(dim=(1, 2), keepdim=True).clip(min=1e-5)
        w_neg = (x_neg.double() - x0.double()).abs().mean(dim=(1, 2), keepdim=True).clip(min=1e-5)
    p = ((x_pos - x0) ** 2 / w_pos).mean(dim=(1, 2))
    n = ((x_neg - x0) ** 2 / w_neg).mean(dim=(1, 2))
    policy = masked_mean((r * p * valid / beta + (1 - r) * n * valid / beta) * amax, valid)
    kl_term = kl * masked_mean(((v_theta - v_ref) ** 2).mean(dim=(1, 2)) * valid, valid)
    height, width = keep_pixels.shape[-2] // 8, keep_pixels.shape[-1] // 8
    bg = F.interpolate(keep_pixels.unsqueeze(1), size=(height, width), mode="nearest")
    bg_e, ed_e = erode(bg, reg["erode_radius"]).clamp(0, 1), erode(1 - bg, reg["erode_radius"]).clamp(0, 1)
    ring = (1 - (bg_e + ed_e).clamp(0, 1)).clamp(0, 1)
    w_bg = (bg_e + reg["ring_weight"] * ring).clamp(0, 1)
    w_ed = (ed_e + reg["ring_weight"] * ring).clamp(0, 1)

    def distance(a, b, weights):
        diff = (unpack(a, height, width) - unpack(b, height, width)) ** 2
        weights = weights.expand_as(diff)
        return (diff * weights).flatten(1).sum(1) / weights.flatten(1).sum(1).clamp(min=1e-6)

    d_bg, d_ed = distance(x_pos, x0, w_bg), distance(x_neg, x_src, w_ed)
    pos = reg["lambda_background"] * torch.relu(d_bg - reg["tau_positive"])
    neg = reg["lambda_edit"] * torch.relu(reg["tau_negative"] - d_ed)
    reg_loss = (r * pos * valid).sum() / valid.sum().clamp(min=1) + ((1 - r) * neg * valid).sum() / valid.sum().clamp(min=1)
    return policy + kl_term + reg_loss


def constants(objective):
    nft, reg = objective.nft, objective.regularizer
    return {"beta": nft.beta, "amax": nft.adv_max, "kl": nft.ref_weight,
            "reg": {k: getattr(reg, k) for k in ("erode_radius", "ring_weight", "lambda_background", "lambda_edit",
                                                   "tau_positive", "tau_negative")}}


def random_unit(seed, batch=5, size=96, valid=None):
    g = torch.Generator().manual_seed(seed)
    h = w = size // 8
    shape = (batch, (h // 2) * (w // 2), 64)
    x0, eps, x_src = (torch.randn(shape, generator=g) for _ in range(3))
    v_old = torch.randn(shape, generator=g)
    v_theta = (v_old + 0.3 * torch.randn(shape, generator=g)).requires_grad_(True)
    v_ref = v_old + 0.1 * torch.randn(shape, generator=g)
    t = torch.rand(batch, generator=g) * 0.9 + 0.05
    adv = torch.randn(batch, generator=g) * 4  # beyond ±5 sometimes: the clip matters
    edit = torch.zeros(batch, size, size, dtype=torch.bool)
    for i in range(batch):  # a random rectangle plus speckle: rings, borders and isolated pixels
        y0, x0_ = (int(v) for v in torch.randint(0, size // 2, (2,), generator=g))
        edit[i, y0 : y0 + size // 3, x0_ : x0_ + size // 2] = True
        edit[i] |= torch.rand(size, size, generator=g) < 0.02
    valid = torch.tensor(valid, dtype=torch.float32) if valid is not None else (torch.rand(batch, generator=g) < 0.7).float()
    x_t = (1 - t.view(-1, 1, 1)) * x0 + t.view(-1, 1, 1) * eps
    return dict(x0=x0, x_t=x_t, t=t, v_theta=v_theta, v_old=v_old, v_ref=v_ref, adv=adv, valid=valid, edit=edit,
                x_src=x_src, rows=h // 2, cols=w // 2)


def ours(objective, u):
    background, edit = latent_region_weights(u["edit"], u["rows"], u["cols"], objective.regularizer.erode_radius,
                                             objective.regularizer.ring_weight)
    loss, _ = unit_loss(objective, u["x_t"], u["t"], u["x0"], u["v_theta"], u["v_old"], u["v_ref"],
                        u["adv"].clamp(-5, 5), u["valid"].bool(), (u["x_src"], background, edit))
    return loss


@pytest.mark.parity
@pytest.mark.parametrize("config_name", PARITY)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_total_loss_and_gradient_match_cocoedit(config_name, seed):
    objective = load_config(CONFIGS / config_name).objective
    u = random_unit(seed, valid=[1, 0, 1, 1, 0] if seed == 2 else None)
    mine = ours(objective, u)
    (grad_mine,) = torch.autograd.grad(mine, u["v_theta"])
    theirs = cocoedit_loss(u["x0"], u["x_t"], u["t"], u["v_theta"], u["v_old"], u["v_ref"], u["adv"], u["valid"],
                           (~u["edit"]).float(), u["x_src"], constants(objective))
    (grad_theirs,) = torch.autograd.grad(theirs, u["v_theta"])
    assert theirs.item() > 0
    terms = u["x0"].numel()  # 5 samples × 36 tokens × 64 channels, averaged in another order by each side
    assert_close(mine, theirs, dtype=torch.float32, accumulations=terms,
                 why="two float32 implementations of one loss: means over every latent value")
    assert_close(grad_mine, grad_theirs, dtype=torch.float32, accumulations=terms,
                 why="gradients of two float32 implementations of one loss")


@pytest.mark.parity
@pytest.mark.parametrize("config_name", PARITY)
def test_regularizer_matters_and_no_valid_sample_gives_zero(config_name):
    objective = load_config(CONFIGS / config_name).objective
    u = random_unit(3)
    t3 = u["t"].view(-1, 1, 1)
    x_negative = (u["x_t"] - t3 * (2 * u["v_old"] - u["v_theta"])).detach()
    u["x_src"] = x_negative + 0.05 * torch.randn_like(x_negative)  # the negative branch barely edits: hinge active
    c = constants(objective)
    with_reg = cocoedit_loss(u["x0"], u["x_t"], u["t"], u["v_theta"], u["v_old"], u["v_ref"], u["adv"], u["valid"],
                             (~u["edit"]).float(), u["x_src"], c)
    c["reg"]["lambda_background"] = c["reg"]["lambda_edit"] = 0.0
    without = cocoedit_loss(u["x0"], u["x_t"], u["t"], u["v_theta"], u["v_old"], u["v_ref"], u["adv"], u["valid"],
                            (~u["edit"]).float(), u["x_src"], c)
    assert with_reg.item() > without.item()  # the comparison above is not blind to the regularizer
    assert_close(ours(objective, u), with_reg.detach(), dtype=torch.float32, accumulations=u["x0"].numel(),
                 why="two float32 implementations of one loss: means over every latent value")
    u = random_unit(4, valid=[0, 0, 0, 0, 0])
    assert ours(objective, u).item() == 0.0


@pytest.mark.parity
def test_unit_weighting_keeps_the_previous_convention():
    config = load_config(CONFIGS / "kontext.yaml", ["objective.nft.weighting=unit"]).objective
    cocoedit = load_config(CONFIGS / "kontext.yaml").objective
    config.nft.ref_weight = cocoedit.nft.ref_weight = 0.0
    u = random_unit(5, valid=[1, 1, 1, 1, 1])
    plain = unit_loss(config, u["x_t"], u["t"], u["x0"], u["v_theta"], u["v_old"], None, u["adv"], u["valid"])[0]
    scaled = unit_loss(cocoedit, u["x_t"], u["t"], u["x0"], u["v_theta"], u["v_old"], None, u["adv"], u["valid"])[0]
    assert_close(scaled, plain * 5.0, dtype=torch.float32, accumulations=5,
                 why="5 per-sample terms summed vs averaged then scaled by 5")
    with pytest.raises(ValueError, match="weighting"):
        config.nft.weighting = "other"
        unit_loss(config, u["x_t"], u["t"], u["x0"], u["v_theta"], u["v_old"], None, u["adv"], u["valid"])


def test_latent_grid_ring_is_cocoedits():
    """Background = latent columns 0..7, edit = 8..15 (16x16 latent grid): the ring is columns 6..9, 4 wide."""
    edit = torch.zeros(1, 128, 128, dtype=torch.bool)
    edit[:, :, 64:] = True
    background, edit_w = latent_region_weights(edit, 8, 8, radius=2, ring_weight=0.2)
    grid_bg = background.view(1, 8, 8, 2, 2).permute(0, 1, 3, 2, 4).reshape(16, 16)
    grid_ed = edit_w.view(1, 8, 8, 2, 2).permute(0, 1, 3, 2, 4).reshape(16, 16)
    expected_bg = torch.tensor([1.0] * 6 + [0.2] * 4 + [0.0] * 6)
    assert torch.equal(grid_bg, expected_bg.expand(16, 16))
    assert torch.equal(grid_ed, expected_bg.flip(0).expand(16, 16))


# ---------------------------------------------------------------- advantages and the ban rule
def stat_tracker(prompts, rewards, ban_std, ban_mean):
    """CoCoEdit's per-prompt tracker with global std, and its training mask and ban set."""
    prompts, rewards = np.array(prompts), np.asarray(rewards, dtype=np.float64)
    advantages, valid, banned = np.zeros_like(rewards), np.zeros(len(rewards), bool), set()
    std = np.std(rewards) + 1e-4
    for p in np.unique(prompts):
        group = rewards[prompts == p]
        advantages[prompts == p] = (group - group.mean()) / std
        valid[prompts == p] = np.std(group) > ban_std and group.mean() < ban_mean
        if np.std(group) < ban_std and group.mean() > ban_mean:
            banned.add(int(p))
    return advantages, valid, banned


@pytest.mark.parity
@pytest.mark.parametrize("config_name", PARITY)
def test_advantages_follow_the_stat_tracker_and_ban_rule(config_name):
    config = load_config(CONFIGS / config_name).advantages
    g = np.random.default_rng(0)
    groups = np.repeat(np.arange(6), 12)
    rewards = g.uniform(0.2, 0.8, size=72)
    rewards[groups == 1] = 0.5  # constant: not trained, not banned (mean < 0.9)
    rewards[groups == 2] = 0.95 + g.uniform(-0.005, 0.005, 12)  # saturated: not trained, banned
    rewards[groups == 3] = 0.92 + g.uniform(-0.2, 0.05, 12)  # spread but mean >= 0.9? trained only if mean < 0.9
    rewards[groups == 4] *= 0.01  # tiny spread at a low mean: std <= 0.02, not trained
    expected, valid, banned = stat_tracker(groups, rewards, config.ban_std, config.ban_mean)
    out = group_advantages(torch.tensor(rewards), torch.tensor(groups), config)
    assert out.keep.numpy().tolist() == valid.tolist()
    assert_close(out.values[torch.from_numpy(valid)], np.clip(expected[valid], -5, 5), accumulations=12,
                 growth="linear", why="a mean and std over a group of 12, another formula than the stat tracker's")
    assert sorted(out.banned) == sorted(banned) == [2]


# ---------------------------------------------------------------- the rollout sampler
def dpm_reference(velocity, x, sigmas):
    """CoCoEdit's solver (order 2, deterministic), float64 coefficients as tensors."""
    s = sigmas.double()
    outputs, lower = [None, None], 0
    for i in range(len(s) - 1):
        m = x - s[i] * velocity(x, float(s[i]))
        outputs = [outputs[1], m]
        final = i == len(s) - 2
        if lower < 1 or final:
            t, u = s[i + 1], s[i]
            x = ((1 - t) * m + t * (x - (1 - u) * m) / u).float()
        else:
            lam = lambda v: torch.log(1 - v) - torch.log(v)  # noqa: E731
            h, h0 = lam(s[i + 1]) - lam(s[i]), lam(s[i]) - lam(s[i - 1])
            d0, d1 = outputs[1], (1.0 / (h0 / h)) * (outputs[1] - outputs[0])
            a = (1 - s[i + 1]) * (torch.exp(-h) - 1.0)
            x = ((s[i + 1] / s[i]) * x - a * d0 - 0.5 * a * d1).float()
        lower = min(lower + 1, 2)
    return x


@pytest.mark.parity
def test_dpm2_matches_the_reference_and_is_exact_for_one_point():
    shift = lambda s: 0.63 * s / (1 + (0.63 - 1) * s)  # noqa: E731  (any monotone schedule)
    sigmas = torch.tensor([float(v) for v in np.linspace(1.0, 0.1, 10)] + [0.0])
    sigmas[:-1] = torch.tensor([shift(float(v)) if v < 1 else 1.0 for v in sigmas[:-1]])
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 16, 8, generator=g)
    weight = torch.randn(8, 8, generator=g) * 0.3
    field = lambda z, sigma: torch.tanh(z @ weight) * (1 + sigma) + 0.2 * z  # noqa: E731
    assert_close(dpm2_sample(field, x, sigmas), dpm_reference(field, x, sigmas), dtype=torch.float32,
                 accumulations=8, steps=len(sigmas) - 1, growth="linear",
                 why="the solver written another way: an 8-wide matmul per step, 10 steps, float32 between steps")
    target = torch.randn(2, 16, 8, generator=g)
    exact = lambda z, sigma: (z - target) / sigma  # noqa: E731  (the flow of a single data point)
    assert_close(dpm2_sample(exact, x, sigmas), target, dtype=torch.float32, accumulations=4,
                 steps=len(sigmas) - 1, growth="linear",
                 why="exact in exact arithmetic: about 4 float32 roundings per step, 10 steps")


def test_lagged_policy_blends_and_swaps():
    p = torch.nn.Parameter(torch.zeros(3))
    policy = LaggedPolicy([p], rate=0.1, maximum=0.5)
    with torch.no_grad():
        p.fill_(1.0)
    policy.update(step=2)  # d = 0.2: old = 0.2·0 + 0.8·1
    with policy.active():
        assert_close(p, torch.full((3,), 0.8), accumulations=2, why="0.2 · 0 + 0.8 · 1 in float32")
    assert torch.equal(p.detach(), torch.ones(3))
    assert policy.decay(100) == 0.5
    off = LaggedPolicy([p], rate=0.0, maximum=0.0)
    with off.active():
        assert torch.equal(p.detach(), torch.ones(3))
    with pytest.raises(ValueError, match="no lagged sampling policy"):
        policy.load(None)


# ---------------------------------------------------------------- the trainer runs the parity config
def _kontext_parity_run(model, dataset, out, steps, resume=None):
    from train.main import run

    run(str(CONFIGS / "kontext.yaml"), [
        f"model.path={model}", f"data.dataset={dataset}", f"output_dir={out}", "model.max_sequence_length=32",
        "rewards.weights={pixel_consistency: 1.0}", "data.resolution=[32, 32]", "data.eval_size=1", "lora.rank=4",
        "lora.alpha=4", "sampler.num_steps=3", "sampler.sde_window=[0, 3]", "sampler.train_steps=2",
        "train.groups_per_step=1", "train.group_size=3", f"train.max_steps={steps}", "train.seed=1",
        "objective.nft.old_decay_rate=0.2", "eval.every=0", "checkpoint.every=1", "logging.progress=false",
        "logging.tensorboard=false"], resume=resume)
    import json

    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_kontext_parity_config_trains_and_resumes_exactly(tiny_kontext_dir, edit_dataset_dir, tmp_path):
    whole = _kontext_parity_run(tiny_kontext_dir, edit_dataset_dir, tmp_path / "whole", 3)
    assert [m["step"] for m in whole] == [1, 2, 3] and all(np.isfinite(m["loss"]) for m in whole)
    assert "banned_groups" in whole[0] and "regularizer" in whole[0]
    from train.checkpoint import load_state

    state = load_state(tmp_path / "whole" / "checkpoints" / "step-000003", "state")
    assert len(state["trainer"]["old_policy"]) > 0 and "banned_rows" in state["trainer"]
    _kontext_parity_run(tiny_kontext_dir, edit_dataset_dir, tmp_path / "split", 2)
    split = _kontext_parity_run(tiny_kontext_dir, edit_dataset_dir, tmp_path / "split", 3, resume="auto")
    assert split[-1]["step"] == 3 and split[-1]["loss"] == whole[-1]["loss"]  # the lagged policy was restored


def test_center_crop_then_resize():
    from types import SimpleNamespace

    from PIL import Image

    from train.data import EditDataset

    pixels = np.zeros((20, 40, 3), np.uint8)
    pixels[:, 10:30] = 255  # the centred 20x20 square is white, the sides black
    fake = SimpleNamespace(config=SimpleNamespace(center_crop=True), width=8, height=8)
    out = np.asarray(EditDataset._fit(fake, Image.fromarray(pixels), Image.LANCZOS))
    assert out.shape == (8, 8, 3) and out.min() == 255
    fake.config.center_crop = False
    assert np.asarray(EditDataset._fit(fake, Image.fromarray(pixels), Image.LANCZOS)).min() == 0
