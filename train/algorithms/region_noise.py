"""RC-GRPO's region-decoupled initial noise: a group explores only inside the edit region.

All members of a prompt group share one background noise (drawn from a per-group seed) and draw their own noise on
the edit-mask tokens (from their per-sample generator), so under the deterministic ODE their backgrounds start alike
and the rewards' spread comes from the edit region. Each token is still exactly N(0, 1): it is one standard normal
draw, either the group's or the sample's.
"""
from __future__ import annotations

import torch


def sample_seed(seed: int, step: int, index: int, stream: int = 0) -> int:
    """A per-sample seed independent of process count and batching (stream separates uses)."""
    return (seed * 1_000_003 + step * 10_007 + index * 101 + stream) % (2**63 - 1)


def group_noise_seed(seed: int, step: int, group: int) -> int:
    """The seed of a group's shared background noise (a stream separate from the per-sample seeds)."""
    return sample_seed(seed, step, group, stream=50)


def region_decoupled_noise(own_noise: torch.Tensor, group_ids: torch.Tensor, tokens_in_edit: torch.Tensor,
                           shared_noise: dict[int, torch.Tensor]) -> torch.Tensor:
    """Initial noise (N, L, C): ``own_noise`` on edit-mask tokens, the group's ``shared_noise[group]`` (L, C) elsewhere.

    ``tokens_in_edit`` is (N, L) bool on the packed-token grid.
    """
    if own_noise.ndim != 3 or tokens_in_edit.shape != own_noise.shape[:2]:
        raise ValueError(f"noise {tuple(own_noise.shape)} and token mask {tuple(tokens_in_edit.shape)} disagree")
    groups = [int(g) for g in group_ids.tolist()]
    missing = sorted(set(groups) - set(shared_noise))
    if missing:
        raise ValueError(f"no shared noise for group(s) {missing}")
    background = torch.stack([shared_noise[g].to(own_noise) for g in groups])
    return torch.where(tokens_in_edit.to(own_noise.device)[..., None], own_noise, background)


def group_shared_noise(adapter, height: int, width: int, group_ids: torch.Tensor, seed: int,
                       step: int) -> dict[int, torch.Tensor]:
    """One background noise (L, C) per group, deterministic in (seed, step, group) whatever the batching."""
    return {g: adapter.noise(1, height, width, torch.Generator().manual_seed(group_noise_seed(seed, step, g)))[0]
            for g in sorted({int(g) for g in group_ids.tolist()})}
