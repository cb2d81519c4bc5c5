"""Group-relative advantages (GRPO): each prompt's samples are compared with each other.

``A_i = (r_i − mean_group) / std`` with ``std`` the group's or the whole batch's, clipped to ±``clip``. Groups whose
reward spread is ~0 carry no learning signal and are filtered (advantage 0, ``keep`` False). Samples with a
non-finite reward are excluded from every statistic and never trained on. In multi-process runs the caller
gathers rewards and group ids from all processes first (:func:`gathered_advantages`), so a group that spans
processes is normalised exactly as in a single-process run.

``filter: ban_prompt`` is CoCoEdit's rule instead: a group is trained only when its (population) reward std exceeds
``ban_std`` AND its mean is below ``ban_mean``; a group with std below ``ban_std`` and mean above ``ban_mean`` is
also reported in ``banned`` (the trainer then never samples that prompt again).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from typing import Annotated, Literal
from editkit.config_meta import Range


@dataclass
class AdvantageConfig:
    std: Literal["group", "global"] = "group"
    """"group": divide by the group's std; "global": by the std of all valid rewards"""
    clip: Annotated[float, Range(gt=0)] = 5.0
    """advantages are clipped to [-clip, clip]"""
    min_group_std: Annotated[float, Range(ge=0)] = 1e-06
    """groups with reward std below this are filtered (zero advantage, not trained)"""
    eps: Annotated[float, Range(gt=0)] = 0.0001
    """added to the std to avoid dividing by ~0"""
    filter: Literal["constant", "ban_prompt"] = "constant"
    """"constant": drop groups with std < min_group_std; "ban_prompt": CoCoEdit's rule"""
    ban_std: Annotated[float, Range(ge=0)] = 0.02
    """ban_prompt: train a group only if its reward std exceeds this"""
    ban_mean: float = 0.9
    """ban_prompt: ... and its mean is below this; low std with a higher mean bans the prompt for good"""


@dataclass
class Advantages:
    values: torch.Tensor  # (N,) float32; 0 where not kept
    keep: torch.Tensor  # (N,) bool: finite reward and a group with signal
    stats: dict[str, float]
    banned: list[int] = field(default_factory=list)  # group ids to stop sampling (filter: ban_prompt)


def group_advantages(rewards: torch.Tensor, group_ids: torch.Tensor, config: AdvantageConfig) -> Advantages:
    """Advantages for a flat batch of rewards ``(N,)`` with their prompt-group ids ``(N,)``."""
    if config.std not in ("group", "global"):
        raise ValueError(f"advantage std must be 'group' or 'global', got {config.std!r}")
    if config.filter not in ("constant", "ban_prompt"):
        raise ValueError(f"advantages.filter must be 'constant' or 'ban_prompt', got {config.filter!r}")
    rewards = rewards.detach().to(torch.float64)
    finite = torch.isfinite(rewards)
    values = torch.zeros_like(rewards)
    keep = torch.zeros_like(finite)
    valid_rewards = rewards[finite]
    global_std = valid_rewards.std(unbiased=False) if valid_rewards.numel() > 1 else rewards.new_tensor(0.0)
    filtered_groups, banned = 0, []
    groups = torch.unique(group_ids)
    for group in groups:
        members = (group_ids == group) & finite
        group_rewards = rewards[members]
        if group_rewards.numel() == 0:
            continue
        group_std, group_mean = group_rewards.std(unbiased=False), group_rewards.mean()
        if config.filter == "ban_prompt":
            if group_std < config.ban_std and group_mean > config.ban_mean:
                banned.append(int(group))
            trained = group_std > config.ban_std and group_mean < config.ban_mean
        else:
            trained = group_rewards.numel() >= 2 and group_std >= config.min_group_std
        if not trained:
            filtered_groups += 1
            continue
        std = group_std if config.std == "group" else global_std
        values[members] = (group_rewards - group_rewards.mean()) / (std + config.eps)
        keep[members] = True
    values = values.clamp(-config.clip, config.clip)
    stats = {
        "reward_mean": float(valid_rewards.mean()) if valid_rewards.numel() else float("nan"),
        "reward_std": float(global_std),
        "nonfinite_rewards": int((~finite).sum()),
        "groups": int(groups.numel()),
        "filtered_groups": filtered_groups,
        "kept_fraction": float(keep.float().mean()) if keep.numel() else 0.0,
        "banned_groups": len(banned),
    }
    return Advantages(values.to(torch.float32), keep, stats, banned)


def gathered_advantages(accelerator, rewards: torch.Tensor, group_ids: torch.Tensor, config: AdvantageConfig):
    """Gather rewards/group ids from all processes, normalise globally, return this process's slice.

    Every process must hold the same number of samples (the data sampler guarantees it).
    """
    local = rewards.shape[0]
    all_rewards = accelerator.gather(rewards.detach().to(torch.float32).contiguous())
    all_groups = accelerator.gather(group_ids.contiguous())
    result = group_advantages(all_rewards, all_groups, config)
    start = accelerator.process_index * local
    return Advantages(result.values[start : start + local], result.keep[start : start + local], result.stats,
                      result.banned)
