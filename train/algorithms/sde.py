"""One reverse step of a rectified-flow sampler, as a stochastic policy with a log-probability.

Conventions (Flow-GRPO): ``x_σ = (1 − σ)·x0 + σ·ε``, the model predicts the velocity ``v ≈ ε − x0``, sampling runs
σ from 1 to 0 so ``dt = σ_next − σ < 0``. Every step returns ``(x_next, log_prob, mean, std)`` where
``x_next ~ N(mean, std²)`` and ``log_prob`` is that Gaussian log-density averaged over all non-batch dimensions.
All math runs in float32 whatever the input dtype (bf16 log-probs make importance ratios noisy).
A step with ``std == 0`` is deterministic: its log-prob is defined as 0 (it carries no policy gradient).
Per-token log-probs (for per-token advantages) come from the returned mean/std:
``gaussian_log_prob(x_next, mean, std, per_token=True)``.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import torch


class StepOutput(NamedTuple):
    x_next: torch.Tensor
    log_prob: torch.Tensor  # (batch,)
    mean: torch.Tensor
    std: torch.Tensor  # broadcastable to x


def _as_batch(value: torch.Tensor | float, x: torch.Tensor) -> torch.Tensor:
    """A scalar or per-sample (batch,) value reshaped to broadcast against ``x``."""
    value = torch.as_tensor(value, dtype=torch.float32, device=x.device)
    if value.ndim == 0:
        value = value.expand(x.shape[0])
    return value.reshape(-1, *([1] * (x.ndim - 1)))


def gaussian_log_prob(sample: torch.Tensor, mean: torch.Tensor, std: torch.Tensor,
                      per_token: bool = False) -> torch.Tensor:
    """log N(sample; mean, std²), averaged over non-batch dims (``per_token``: over the last dim only, giving
    (B, L) for packed tokens, for per-token advantages); 0 where std is 0."""
    std = std.expand_as(mean)
    safe = torch.where(std > 0, std, torch.ones_like(std))
    log_density = -((sample.detach() - mean) ** 2) / (2 * safe**2) - torch.log(safe) - 0.5 * math.log(2 * math.pi)
    log_density = torch.where(std > 0, log_density, torch.zeros_like(log_density))
    return log_density.mean(dim=-1) if per_token else log_density.mean(dim=tuple(range(1, sample.ndim)))


def _finish(x, mean, std, noise, prev_sample):
    if prev_sample is None:
        if noise is None:
            noise = torch.randn_like(mean)
        prev_sample = mean + std * noise.to(torch.float32)
    prev_sample = prev_sample.to(torch.float32)
    return StepOutput(prev_sample.to(x.dtype), gaussian_log_prob(prev_sample, mean, std), mean, std)


def flow_sde_step(x: torch.Tensor, v: torch.Tensor, sigma: torch.Tensor | float, sigma_next: torch.Tensor | float,
                  noise_level: float, noise: torch.Tensor | None = None, *, sigma_max: float | None = None,
                  prev_sample: torch.Tensor | None = None) -> StepOutput:
    """Flow-SDE step (Flow-GRPO). ``std_t = noise_level·sqrt(σ/(1−σ'))`` with σ' = σ, except at σ = 1 where the
    caller passes ``sigma_max`` (the first sigma below 1) to avoid the pole; the transition std is ``std_t·sqrt(−dt)``.

    Pass ``prev_sample`` (instead of ``noise``) to score a stored transition under the current velocity.
    """
    x32, v32 = x.to(torch.float32), v.to(torch.float32)
    sigma, sigma_next = _as_batch(sigma, x32), _as_batch(sigma_next, x32)
    dt = sigma_next - sigma
    if sigma_max is None and bool((sigma >= 1).any()):
        raise ValueError("flow_sde_step at sigma=1 needs sigma_max (the first sigma below 1) for the noise scale")
    denominator_sigma = torch.where(sigma >= 1, torch.full_like(sigma, sigma_max or 0.0), sigma)
    std_t = noise_level * torch.sqrt(sigma / (1 - denominator_sigma))
    mean = x32 * (1 + std_t**2 / (2 * sigma) * dt) + v32 * (1 + std_t**2 * (1 - sigma) / (2 * sigma)) * dt
    std = std_t * torch.sqrt(-dt)
    return _finish(x, mean, std, noise, prev_sample)


def cps_step(x: torch.Tensor, v: torch.Tensor, sigma: torch.Tensor | float, sigma_next: torch.Tensor | float,
             noise_level: float, noise: torch.Tensor | None = None, *,
             prev_sample: torch.Tensor | None = None) -> StepOutput:
    """Coefficients-preserving sampling: ``std = σ_next·sin(η·π/2)``, ``x̂0 = x − σv``, ``x̂1 = x + (1−σ)v``,
    ``mean = x̂0·(1−σ_next) + x̂1·sqrt(σ_next² − std²)``. With η = 0 it is the Euler ODE step."""
    x32, v32 = x.to(torch.float32), v.to(torch.float32)
    sigma, sigma_next = _as_batch(sigma, x32), _as_batch(sigma_next, x32)
    std = sigma_next * math.sin(noise_level * math.pi / 2)
    x0_hat = x32 - sigma * v32
    x1_hat = x32 + (1 - sigma) * v32
    mean = x0_hat * (1 - sigma_next) + x1_hat * torch.sqrt((sigma_next**2 - std**2).clamp_min(0))
    return _finish(x, mean, std, noise, prev_sample)


def ode_step(x: torch.Tensor, v: torch.Tensor, sigma, sigma_next) -> torch.Tensor:
    """The deterministic Euler step ``x + (σ_next − σ)·v`` (in float32, returned in x's dtype)."""
    x32 = x.to(torch.float32)
    dt = _as_batch(sigma_next, x32) - _as_batch(sigma, x32)
    return (x32 + dt * v.to(torch.float32)).to(x.dtype)


SDE_STEPS = {"flow_sde": flow_sde_step, "cps": cps_step}


def sde_transition(kind: str, x, v, sigma, sigma_next, noise_level, noise=None, *, sigma_max=None,
                   prev_sample=None) -> StepOutput:
    """Dispatch to the configured SDE (``"flow_sde"`` or ``"cps"``)."""
    if kind == "flow_sde":
        return flow_sde_step(x, v, sigma, sigma_next, noise_level, noise, sigma_max=sigma_max, prev_sample=prev_sample)
    if kind == "cps":
        return cps_step(x, v, sigma, sigma_next, noise_level, noise, prev_sample=prev_sample)
    raise ValueError(f"unknown sde {kind!r}; known: {sorted(SDE_STEPS)}")
