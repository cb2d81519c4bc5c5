"""Edit-GRPO's region-specific advantages: the edit reward drives the edit region, the preservation reward the rest.

The configured rewards are split into an *edit* mix and a *preservation* mix (``Σ weight_k · reward_k`` over each
list); each mix is group-normalised on its own with :func:`train.algorithms.advantages.group_advantages`. Every
latent token then gets the edit advantage if it lies in the edit mask (pooled to the packed-token grid) and the
preservation advantage otherwise, and the per-token GRPO loss (:func:`train.algorithms.grpo.grpo_loss`) weighs each
token's ratio by it.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from train.algorithms.advantages import Advantages


@dataclass
class RegionAdvantageConfig:
    enabled: bool = False
    """GRPO only: per-token advantages (edit reward inside the mask, preservation outside)"""
    edit_rewards: list[str] = field(default_factory=lambda: ["clip_direction"])
    """rewards (names in rewards.weights) that score the edit region"""
    preservation_rewards: list[str] = field(default_factory=lambda: ["pixel_consistency"])
    """rewards (names in rewards.weights) that score the background outside the mask"""

    def check(self, weights: dict[str, float]) -> None:
        """Both lists non-empty, disjoint and made of configured rewards."""
        for label, names in (("edit_rewards", self.edit_rewards), ("preservation_rewards", self.preservation_rewards)):
            if not names:
                raise ValueError(f"region_advantages.{label} is empty")
            missing = sorted(set(names) - set(weights))
            if missing:
                raise ValueError(f"region_advantages.{label} names {missing}, not in rewards.weights {sorted(weights)}")
        both = sorted(set(self.edit_rewards) & set(self.preservation_rewards))
        if both:
            raise ValueError(f"reward(s) {both} are listed as both edit and preservation rewards")


def token_mask(masks: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    """(N, H, W) pixel edit masks -> (N, rows·cols) bool on the packed-token grid (row-major, like the packing):
    a token is in the edit region when more than half of its pixels are."""
    pooled = F.adaptive_avg_pool2d(masks.float().unsqueeze(1), (rows, cols)).squeeze(1)
    return (pooled > 0.5).flatten(1)


def reward_mix(parts: dict[str, torch.Tensor], weights: dict[str, float], names: list[str]) -> torch.Tensor:
    """``Σ weight_k · reward_k`` over ``names`` (a non-finite component makes the mix non-finite)."""
    return sum(weights[name] * parts[name].to(torch.float64) for name in names)


def per_token_advantages(edit: Advantages, preservation: Advantages, tokens_in_edit: torch.Tensor,
                         finite: torch.Tensor) -> Advantages:
    """Per-token advantages (N, L): ``edit.values`` on edit-mask tokens, ``preservation.values`` elsewhere.

    A sample is trained when either region's group carries signal (the other region then gets advantage 0) and
    both of its rewards are finite (``finite``, (N,) bool): a sample with a broken reward is never trained on.
    """
    if tokens_in_edit.shape[0] != edit.values.shape[0]:
        raise ValueError(f"{tokens_in_edit.shape[0]} token masks for {edit.values.shape[0]} samples")
    device = edit.values.device
    inside = tokens_in_edit.to(device)
    keep = (edit.keep | preservation.keep.to(device)) & finite.to(device)
    values = torch.where(inside, edit.values[:, None], preservation.values.to(device)[:, None])
    values = torch.where(keep[:, None], values, torch.zeros_like(values))
    stats = {**{f"edit_{k}": v for k, v in edit.stats.items()},
             **{f"preservation_{k}": v for k, v in preservation.stats.items()},
             "edit_token_fraction": float(inside.float().mean()) if inside.numel() else 0.0}
    return Advantages(values, keep, stats)
