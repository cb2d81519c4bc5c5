"""GRPO-Guard (arXiv 2510.22319) as an option of the GRPO loss, against the paper's equations re-derived here and
against the formula of the public implementation in verl-omni (``GRPOGuardLoss`` in
``verl_omni/trainer/diffusion/diffusion_algos.py``; the authors released no code)."""
from __future__ import annotations

import torch

from train.algorithms.grpo import GRPOConfig, grpo_loss
from train.algorithms.grpo_guard import GuardInputs, guard_log_ratio
from tests.support.numerics import assert_close, assert_exact

D = 4 * 8 * 8  # latent dims averaged in a log-prob


def gaussian_mean_log_prob(x, mean, std):
    """log N(x; mean, std²) averaged over the non-batch dims, written with torch.distributions (float64)."""
    density = torch.distributions.Normal(mean.double(), torch.as_tensor(std, dtype=torch.float64))
    return density.log_prob(x.double()).flatten(1).mean(dim=1)


def transition(seed, s, delta_scale=0.01, batch=6):
    g = torch.Generator().manual_seed(seed)
    old_mean = torch.randn(batch, 4, 8, 8, generator=g)
    delta = delta_scale * torch.randn(batch, 4, 8, 8, generator=g)
    eps = torch.randn(batch, 4, 8, 8, generator=g)
    x_next = old_mean + s * eps  # sampled by the rollout policy
    return old_mean, delta, eps, x_next


def test_ratio_norm_is_the_papers_identity_and_free_of_the_step_std():
    """With x' = μ_old + s·ε and Δ = μ_θ − μ_old: log ρ = mean(Δε)/s − mean(Δ²)/(2s²), so RatioNorm's
    (log ρ + b)·s = mean(Δ·ε) for every s, while the raw log-ratio's mean (−b) and spread (∝ 1/s) depend on s."""
    raw = []
    for s in (0.3, 0.05):
        old_mean, delta, eps, x_next = transition(0, s)
        mean = old_mean + delta
        log_prob = gaussian_mean_log_prob(x_next, mean, s).float()
        old_log_prob = gaussian_mean_log_prob(x_next, old_mean, s).float()
        got = guard_log_ratio(log_prob, old_log_prob, GuardInputs(mean, old_mean, s, dt=-0.1))
        bias = (delta.double() ** 2).flatten(1).mean(1) / (2 * s**2)
        # the log-probs are float32 values of size ~1 (constant terms) whose difference is O(b): error ~ eps32 · s
        assert_close(got, (delta.double() * eps.double()).flatten(1).mean(1), dtype=torch.float32,
                     accumulations=D, growth="linear", scale=max(1.0, float(bias.max())) * s,
                     why="float32 log-probs of size ~1 differenced, plus a float32 bias over D dims, times s")
        raw.append(log_prob.double() - old_log_prob.double())
        assert float(raw[-1].mean()) < 0  # the left shift the paper reports: mean log-ratio below 0
    assert float(raw[1].std()) > 3 * float(raw[0].std())  # the raw spread grows as s shrinks


def verl_omni_guard_loss(log_prob, old_log_prob, advantages, prev_sample_mean, old_prev_sample_mean, std_dev_t,
                         sqrt_dt, clip_ratio):
    """The public implementation's formula, re-written: shared per-step scale sqrt_dt·σ_t, bias over latent dims,
    ratio = exp((log ρ + bias)·scale), loss = mean(max(−Aρ, −A·clip(ρ))) / sqrt_dt²."""
    scale = sqrt_dt * std_dev_t
    diff_sq = (prev_sample_mean - old_prev_sample_mean) ** 2
    bias = diff_sq.mean(dim=tuple(range(1, diff_sq.ndim))) / (2 * scale**2)
    ratio = torch.exp((log_prob - old_log_prob + bias) * scale)
    per = torch.maximum(-advantages * ratio, -advantages * torch.clamp(ratio, 1 - clip_ratio, 1 + clip_ratio))
    return per.mean() / sqrt_dt**2, ratio


def test_loss_matches_the_public_formula_value_and_gradient():
    sigma, sigma_next, noise_level = 0.7, 0.6, 0.7
    dt = sigma_next - sigma
    std_t = noise_level * (sigma / (1 - sigma)) ** 0.5  # Flow-SDE's std_dev_t
    s = std_t * (-dt) ** 0.5  # the transition std
    old_mean, delta, _, x_next = transition(1, s, delta_scale=0.02)
    advantages = torch.tensor([1.5, -0.7, 0.2, -2.0, 0.9, 0.0])
    keep = torch.ones(6, dtype=torch.bool)
    for clip_range in (1e-4, 0.5):  # mostly clipped / mostly unclipped
        mine = (old_mean + delta).requires_grad_(True)
        theirs = (old_mean + delta).requires_grad_(True)
        lp = lambda m: ((x_next - m) ** 2 / (-2 * s**2)).flatten(1).mean(1) - torch.log(torch.tensor(s))  # noqa: E731
        old_lp = lp(old_mean).detach()
        loss, stats = grpo_loss(lp(mine), old_lp, advantages, keep, clip_range,
                                guard=GuardInputs(mine, old_mean, torch.tensor(s), dt))
        want, ratio = verl_omni_guard_loss(lp(theirs), old_lp, advantages, theirs, old_mean, torch.tensor(std_t),
                                           torch.tensor((-dt) ** 0.5), clip_range)
        loss.backward()
        want.backward()
        why = "the same float32 formula in another grouping: sums over D latent dims, divided by -dt"
        assert_close(loss, want, dtype=torch.float32, accumulations=D, scale=float(want.detach().abs()) + 1 / -dt, why=why)
        assert_close(mine.grad, theirs.grad, dtype=torch.float32, accumulations=D,
                     scale=float(theirs.grad.abs().max()), why=why)
        assert_close(stats["ratio_mean"], ratio.mean(), dtype=torch.float32, accumulations=D, why=why)


def test_on_policy_ratio_is_one_the_loss_is_reweighted_and_off_by_default():
    s, dt = 0.2, -0.25
    old_mean, _, _, x_next = transition(2, s)
    old_lp = gaussian_mean_log_prob(x_next, old_mean, s).float()
    advantages, keep = torch.tensor([1.0, -1.0, 2.0, 0.5, -0.5, 0.0]), torch.ones(6, dtype=torch.bool)
    guarded, stats = grpo_loss(old_lp.clone(), old_lp, advantages, keep, 1e-4,
                               guard=GuardInputs(old_mean, old_mean, s, dt))
    plain, _ = grpo_loss(old_lp.clone(), old_lp, advantages, keep, 1e-4)
    assert_exact(stats["ratio_mean"], torch.tensor(1.0), why="on-policy: zero bias, zero log-ratio, exp(0) = 1")
    assert_close(guarded, plain / -dt, dtype=torch.float32, accumulations=6,
                 why="the same mean of six terms, divided by -dt")
    # a deterministic step (s = 0) carries no ratio change; per-token log-probs (B, L) with packed means (B, L, C)
    per_token = GuardInputs(torch.randn(2, 5, 3), torch.randn(2, 5, 3), torch.zeros(2, 1, 1), dt)
    assert_exact(guard_log_ratio(torch.zeros(2, 5), torch.zeros(2, 5), per_token), torch.zeros(2, 5),
                 why="std 0: the step is the ODE's, its log-ratio is defined as 0")
    assert GRPOConfig().guard is False


def test_the_grpo_trainer_runs_with_the_guard_and_it_changes_the_update(tiny_kontext_dir, edit_dataset_dir, tmp_path):
    """``objective.grpo.guard=true`` reaches the loss: the rollout keeps its transition means, the on-policy ratio is
    exactly 1, and the step's loss (reweighted by 1/(−dt)) differs from the unguarded one on the same batch."""
    import json
    from pathlib import Path

    from train.main import run

    config = Path(__file__).resolve().parents[2] / "train" / "configs" / "tiny_kontext.yaml"
    metrics = {}
    for guard in (True, False):
        out = tmp_path / f"guard-{guard}"
        run(str(config), ["objective.name=grpo", f"objective.grpo.guard={str(guard).lower()}",
                          "objective.regularizer.enabled=false", f"model.path={tiny_kontext_dir}",
                          f"data.dataset={edit_dataset_dir}", f"output_dir={out}", "train.max_steps=1",
                          "train.groups_per_step=1", "train.group_size=2", "train.micro_batch_size=2", "train.seed=1",
                          "sampler.num_steps=2", "sampler.sde_window=[0, 2]", "sampler.train_steps=1", "eval.every=0",
                          "checkpoint.every=0", "logging.progress=false", "logging.tensorboard=false"])
        metrics[guard] = json.loads((out / "metrics.jsonl").read_text().splitlines()[0])
    guarded, plain = metrics[True], metrics[False]
    assert guarded["ratio_first"] == 1.0 and guarded["grad_norm"] > 0 and torch.isfinite(torch.tensor(guarded["loss"]))
    assert guarded["reward_mean"] == plain["reward_mean"]  # the same rollouts ...
    assert guarded["grad_norm"] != plain["grad_norm"]  # ... and another update
