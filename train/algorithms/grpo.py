"""Flow-GRPO's clipped policy-gradient loss over SDE transitions, with an optional KL to the reference policy.

For one stored transition ``x_t → x_{t−1}`` the current policy's log-prob is recomputed from a fresh velocity;
``ρ = exp(log π_θ − log π_old)`` and ``L = mean(max(−A·ρ, −A·clip(ρ, 1−ε, 1+ε)))``. On-policy (first update after
sampling, same batch size) ``ρ`` is exactly 1. The KL between the two Gaussian transitions with equal std is
``‖μ_θ − μ_ref‖² / (2·std²)`` (mean over dims); the reference is the base model (LoRA disabled).

``guard: true`` (GRPO-Guard, :mod:`train.algorithms.grpo_guard`) replaces ``ρ`` by its RatioNorm form and divides the
step's loss by ``−dt``; the loss then needs the step's transition means (current and rollout), std and ``dt``.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from typing import Annotated, Optional
from editkit.config_meta import Range
from train.algorithms.grpo_guard import GuardInputs, guard_log_ratio, step_weight


@dataclass
class GRPOConfig:
    clip_range: Annotated[float, Range(gt=0)] = 0.0001
    """ε of the ratio clip (Flow-GRPO uses 1e-4: SDE log-probs are averaged over many dims)"""
    kl_beta: Annotated[float, Range(ge=0)] = 0.0
    """weight of the KL to the reference policy (0 = skip the reference forward)"""
    guard: bool = False
    """GRPO-Guard (arXiv 2510.22319): normalise the log-ratio (add back its mean-shift bias, scale by the transition
    std) so clipping acts on both sides at every step, and divide each step's loss by -dt; the ratio's scale changes,
    so retune clip_range (public runs use ~2e-6)"""


def grpo_loss(
    log_prob: torch.Tensor,
    old_log_prob: torch.Tensor,
    advantages: torch.Tensor,
    keep: torch.Tensor,
    clip_range: float,
    guard: Optional[GuardInputs] = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Clipped surrogate (scalar, mean over kept samples) and its diagnostics.

    ``log_prob``/``old_log_prob`` are (B,) or per token (B, L); ``advantages`` (B,) or (B, L) broadcast against
    them (region-specific advantages give each latent token its own value); per-token terms are averaged per sample.
    ``guard`` (GRPO-Guard): the step's means, std and dt; the ratio is normalised and the loss divided by ``−dt``.
    """
    if guard is None:
        ratio = torch.exp(log_prob - old_log_prob.detach())
    else:
        ratio = torch.exp(guard_log_ratio(log_prob, old_log_prob, guard))
    if advantages.ndim < ratio.ndim:
        advantages = advantages.reshape(*advantages.shape, *([1] * (ratio.ndim - advantages.ndim)))
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - clip_range, 1.0 + clip_range)
    per_sample = torch.maximum(unclipped, clipped)
    if per_sample.ndim > 1:
        per_sample = per_sample.flatten(1).mean(dim=1)
    weight = keep.to(per_sample.dtype)
    loss = (per_sample * weight).sum() / weight.sum().clamp_min(1.0)
    if guard is not None:
        loss = loss * step_weight(guard.dt)
    stats = {
        "ratio_mean": ratio.detach().mean(),
        "clip_fraction": ((ratio.detach() - 1).abs() > clip_range).float().mean(),
    }
    return loss, stats


def gaussian_kl(mean: torch.Tensor, ref_mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """KL(N(mean, std²) ‖ N(ref_mean, std²)) per sample, averaged over non-batch dims; 0 where std is 0."""
    std = std.expand_as(mean)
    safe = torch.where(std > 0, std, torch.ones_like(std))
    kl = torch.where(std > 0, (mean - ref_mean.detach()) ** 2 / (2 * safe**2), torch.zeros_like(mean))
    return kl.mean(dim=tuple(range(1, mean.ndim)))
