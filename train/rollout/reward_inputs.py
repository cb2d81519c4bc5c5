"""What a reward sees of a training batch or of held-out examples (:class:`train.rewards.RewardInputs` pieces)."""
from __future__ import annotations

from typing import Any

import torch

from train.rewards import RewardInputs


def micro_batch_inputs(batch, mb: slice, images: torch.Tensor, extras: dict[str, Any]) -> RewardInputs:
    """The reward inputs of samples ``mb`` of ``batch`` (a :class:`train.trainers.batch.Batch`)."""
    return RewardInputs(images, batch.sources[mb], batch.masks[mb], batch.prompts[mb], batch.edit_types[mb],
                        targets=None if batch.targets is None else batch.targets[mb],
                        phrases=None if batch.phrases is None else batch.phrases[mb], extras=extras)


def stacked_targets(examples) -> torch.Tensor | None:
    """The examples' ground-truth edited images stacked, or None unless every example has one."""
    if not examples or any(e.target is None for e in examples):
        return None
    return torch.stack([e.target for e in examples])
