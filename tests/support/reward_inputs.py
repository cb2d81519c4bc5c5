"""Reward inputs for the reward tests: seeded random images and sources, empty edit masks, given prompts."""
from __future__ import annotations

import torch


def random_reward_inputs(prompts, size: int, edit_type: str = "recolor"):
    """A :class:`train.rewards.RewardInputs` of ``len(prompts)`` random ``size``×``size`` edits (seed 0)."""
    from train.rewards import RewardInputs

    generator = torch.Generator().manual_seed(0)
    count = len(prompts)
    return RewardInputs(images=torch.rand(count, 3, size, size, generator=generator),
                        sources=torch.rand(count, 3, size, size, generator=generator),
                        edit_masks=torch.zeros(count, size, size, dtype=torch.bool), prompts=list(prompts),
                        edit_types=[edit_type] * count)
