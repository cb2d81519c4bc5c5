"""One process's samples of one iteration: the conditioned prompts (:class:`Batch`) and what the rollouts gave
(:class:`Samples`; each trainer extends it with the tensors its ``optimize`` needs)."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from train.adapters.base import Conditioning
from train.algorithms.region_noise import sample_seed  # noqa: F401  (the trainers import it from here)
from train.rollout.micro_batches import MicroBatchRollouts
from train.rollout.reward_thread import PendingRewards


@dataclass
class Samples:
    """Filled by the trainer's ``sample``; every tensor's first dim is the batch's."""

    final: torch.Tensor  # (N, L, C) clean latents of the rollouts
    images: torch.Tensor  # (N, 3, H, W) decoded rollouts, CPU
    extras: dict  # per-sample reward extras (the recorded attention maps); empty when nothing is recorded
    pending_rewards: PendingRewards | None = None  # rewards being computed on the reward thread (until ``score``)
    reward_parts: dict[str, torch.Tensor] | None = None  # set by ``score``: each reward's (N,) values

    @classmethod
    def from_rollouts(cls, rollouts: MicroBatchRollouts, **fields):
        """The samples of ``rollouts`` plus the subclass's own ``fields``."""
        return cls(final=rollouts.final, images=rollouts.images, extras=rollouts.extras,
                   pending_rewards=rollouts.pending_rewards, **fields)


@dataclass
class Batch:
    """One process's samples of one iteration (all tensors share the first dim)."""

    cond: Conditioning
    sources: torch.Tensor  # (N, 3, H, W) CPU
    masks: torch.Tensor  # (N, H, W) bool CPU
    prompts: list[str]
    edit_types: list[str]
    group_ids: torch.Tensor  # (N,) int64
    seeds: list[int]  # per-sample noise seeds
    targets: torch.Tensor | None = None  # (N, 3, H, W) ground-truth edited images when every row has one
    phrases: list[list[str]] | None = None  # per sample: the edit's target phrases
    group_rows: dict[int, int] | None = None  # every group id of the iteration (all processes) -> dataset row
    samples: Samples | None = None  # filled by ``sample``
