"""GRPO-Guard (arXiv 2510.22319, "Mitigating Implicit Over-Optimization in Flow Matching via Regulated Clipping"):
the importance ratio of a Gaussian SDE transition, normalised so that PPO clipping constrains both sides at every step.

Why. A transition ``x' ~ N(μ_old, s²)`` sampled by the rollout policy and re-scored by the current one (mean ``μ_θ``,
same std ``s``) has, with ``x' = μ_old + s·ε`` and ``Δ = μ_θ − μ_old`` (means over the latent's dimensions)::

    log ρ = −mean(Δ²) / (2 s²) + mean(Δ·ε) / s

Its mean is negative (ρ sits below 1, so a positive-advantage sample rarely reaches ``1 + ε_clip`` and over-confident
updates pass unclipped) and its spread scales with ``1/s``, which differs from step to step.

What. RatioNorm adds the bias back and multiplies by the transition std, and the step's loss is divided by ``−dt``
so that the policy gradient (which reaches the velocity through ``μ``'s factor ``dt``) has one size over steps::

    b = mean((μ_θ − μ_old)²) / (2 s²)
    ρ̂ = exp((log π_θ − log π_old + b) · s)          (= exp(mean(Δ·ε)): mean 1 in log, spread free of s)
    L = mean(max(−A·ρ̂, −A·clip(ρ̂, 1 − ε, 1 + ε))) / (−dt)

``s`` is the transition std (Flow-SDE: ``std_t·sqrt(−dt)``; CPS: ``σ_next·sin(ηπ/2)``). The bias stays
differentiable (it is part of the normalised log-ratio). A deterministic step (``s = 0``) has ratio 1.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class GuardInputs:
    """What GRPO-Guard needs beyond the log-probs, for one SDE step of a micro-batch.

    ``mean``: the current policy's transition mean (with grad); ``old_mean``: the rollout policy's transition mean
    for the same state (stored at rollout); ``std``: the transition std (broadcastable to ``mean``); ``dt``: the
    step's ``σ_next − σ`` (negative)."""

    mean: torch.Tensor
    old_mean: torch.Tensor
    std: torch.Tensor | float
    dt: float


def _reduce_like(value: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Mean over the dims of ``value`` beyond those of ``like`` ((B,) per sample, (B, L) per token)."""
    extra = tuple(range(like.ndim, value.ndim))
    return value.mean(dim=extra) if extra else value


def guard_log_ratio(log_prob: torch.Tensor, old_log_prob: torch.Tensor, guard: GuardInputs) -> torch.Tensor:
    """The RatioNorm log-ratio ``(log π_θ − log π_old + b)·s``, shaped like ``log_prob``."""
    mean, old_mean = guard.mean.to(torch.float32), guard.old_mean.to(torch.float32).detach()
    std = torch.as_tensor(guard.std, dtype=torch.float32, device=mean.device).expand_as(mean)
    scale = _reduce_like(std, log_prob)
    safe = torch.where(scale > 0, scale, torch.ones_like(scale))
    bias = _reduce_like((mean - old_mean) ** 2, log_prob) / (2 * safe**2)
    normalized = (log_prob - old_log_prob.detach() + bias) * scale
    return torch.where(scale > 0, normalized, torch.zeros_like(normalized))


def step_weight(dt: float) -> float:
    """GRPO-Guard's gradient reweighting: the step's loss is divided by ``−dt``."""
    if not dt < 0:
        raise ValueError(f"GRPO-Guard needs a denoising step with dt < 0, got dt={dt}")
    return 1.0 / -dt
