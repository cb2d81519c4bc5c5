"""Group Contrastive Preference Optimization (Edit-R1's GCPO) as pure tensor functions.

For one preference pair the RRM samples N trajectories (each ending in a score) for the winner image and N for the
loser image. A winner trajectory is rewarded by the fraction of loser trajectories it out-scores, a loser trajectory
by the fraction of winner trajectories that out-score it::

    r^w_j = (1/N) Σ_k 1{s^w_j > s^l_k}        r^l_j = (1/N) Σ_k 1{s^l_j < s^w_k}

Advantages are normalised within the winner group and within the loser group separately; the update is a PPO-style
clipped surrogate over the trajectories' tokens with no KL term.

Choices the paper leaves open (each a knob of :class:`GCPOConfig`):
* ``tie_value``: what an exact tie s^w_j == s^l_k counts (0 = strict comparison as written, 0.5 = half);
* invalid trajectories (unparseable, score NaN): their own reward is 0 (the minimum, so the format is learnt), and as
  opponents they count 0 for everyone — a constant shift inside a group that the normalisation removes;
* normalisation ``(r - mean) / (std + eps)`` with the population std (``eps``);
* ``aggregation``: ``token_mean`` (every token of the batch weighs the same) or ``sequence_mean`` (mean over each
  trajectory's tokens, then over trajectories);
* ``clip_low`` / ``clip_high``: the ratio's clip range ``[1 - clip_low, 1 + clip_high]``.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from typing import Annotated, Literal
from editkit.config_meta import Range
from editkit.errors import ConfigError

AGGREGATIONS = ("token_mean", "sequence_mean")


@dataclass
class GCPOConfig:
    num_trajectories: Annotated[int, Range(ge=2)] = 4
    """trajectories sampled per image, N (so 2N per preference pair); at least 2"""
    temperature: Annotated[float, Range(gt=0)] = 1.0
    """sampling temperature of the trajectories"""
    max_new_tokens: Annotated[int, Range(ge=1)] = 512
    """most tokens generated per trajectory"""
    tie_value: Annotated[float, Range(ge=0, le=0.5)] = 0.0
    """an exact score tie counts 0 (strict) or 0.5"""
    eps: Annotated[float, Range(gt=0)] = 1e-06
    """advantage normalisation: (r - mean) / (std + eps)"""
    clip_low: Annotated[float, Range(ge=0)] = 0.2
    """lower clip range of the probability ratio (1 - clip_low)"""
    clip_high: Annotated[float, Range(ge=0)] = 0.2
    """upper clip range of the probability ratio (1 + clip_high)"""
    aggregation: Literal["token_mean", "sequence_mean"] = "token_mean"
    """how token losses are averaged: token_mean or sequence_mean"""
    updates_per_batch: Annotated[int, Range(ge=1)] = 1
    """optimizer updates on one batch of trajectories (> 1: the ratio moves off 1)"""

    def __post_init__(self) -> None:
        if self.num_trajectories < 2:
            raise ConfigError("gcpo.num_trajectories must be >= 2 (advantages compare trajectories of one image)")
        if self.tie_value not in (0.0, 0.5):
            raise ConfigError(f"gcpo.tie_value must be 0 or 0.5, got {self.tie_value}")
        if self.aggregation not in AGGREGATIONS:
            raise ConfigError(f"gcpo.aggregation must be one of {AGGREGATIONS}, got {self.aggregation!r}")
        if self.eps <= 0 or self.clip_low < 0 or self.clip_high < 0:
            raise ConfigError("gcpo.eps must be > 0 and the clip ranges >= 0")


def contrastive_rewards(winner: torch.Tensor, loser: torch.Tensor, tie_value: float = 0.0):
    """Rewards of the winner's and the loser's trajectories from their scores, (..., N) each (NaN = invalid)."""
    w, l = winner.unsqueeze(-1), loser.unsqueeze(-2)  # (..., N, 1) vs (..., 1, N): entry [j, k]
    beats = (w > l).to(torch.float64) + tie_value * (w == l).to(torch.float64)  # NaN compares False
    count = winner.shape[-1]
    reward_w = beats.sum(-1) / count  # winner j against every loser k
    reward_l = beats.sum(-2) / count  # loser k: how many winners beat it
    reward_w = reward_w.masked_fill(torch.isnan(winner), 0.0)
    reward_l = reward_l.masked_fill(torch.isnan(loser), 0.0)
    return reward_w, reward_l


def group_normalise(rewards: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """(r - mean) / (std + eps) over the last dim (one group), population std."""
    mean = rewards.mean(-1, keepdim=True)
    std = rewards.std(-1, unbiased=False, keepdim=True)
    return (rewards - mean) / (std + eps)


def gcpo_advantages(winner: torch.Tensor, loser: torch.Tensor, tie_value: float = 0.0, eps: float = 1e-6):
    """Normalised advantages (winner group, loser group) and the raw rewards, each (..., N)."""
    reward_w, reward_l = contrastive_rewards(winner, loser, tie_value)
    return group_normalise(reward_w, eps), group_normalise(reward_l, eps), reward_w, reward_l


def clipped_surrogate(logp: torch.Tensor, logp_old: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor,
                      clip_low: float = 0.2, clip_high: float = 0.2, aggregation: str = "token_mean",
                      denominator: float | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    """PPO-clip loss ``-min(ρ·A, clip(ρ, 1-clip_low, 1+clip_high)·A)`` per token, ρ = exp(logp - logp_old).

    ``logp``/``logp_old``/``mask``: (T, L) per-token values of T trajectories; ``advantages``: (T,).
    ``token_mean`` divides the masked sum by ``denominator`` (default: this batch's token count; pass the count of
    the whole update when it is split into micro-batches); ``sequence_mean`` averages each trajectory's tokens, then
    divides the sum over trajectories by ``denominator`` (default: T).
    """
    if aggregation not in AGGREGATIONS:
        raise ValueError(f"aggregation must be one of {AGGREGATIONS}, got {aggregation!r}")
    mask = mask.to(logp.dtype)
    ratio = torch.exp(logp - logp_old)
    adv = advantages.to(logp.dtype).unsqueeze(-1)
    per_token = -torch.minimum(ratio * adv, torch.clamp(ratio, 1 - clip_low, 1 + clip_high) * adv) * mask
    if aggregation == "token_mean":
        loss = per_token.sum() / (denominator if denominator is not None else mask.sum().clamp(min=1))
    else:
        per_sequence = per_token.sum(-1) / mask.sum(-1).clamp(min=1)
        loss = per_sequence.sum() / (denominator if denominator is not None else per_sequence.shape[0])
    with torch.no_grad():
        clipped = ((ratio < 1 - clip_low) | (ratio > 1 + clip_high)).to(logp.dtype) * mask
        stats = {"clip_fraction": float(clipped.sum() / mask.sum().clamp(min=1)),
                 "ratio_mean": float((ratio * mask).sum() / mask.sum().clamp(min=1))}
    return loss, stats
