"""Algorithms: one trainer class per objective, in :data:`TRAINERS` keyed by ``objective.name``."""
from __future__ import annotations

from editkit.registry import Registry, subclass_of


def _trainer_base() -> type:
    from train.trainers.base import Trainer  # torch: imported when an objective is looked up, not for the names

    return Trainer


TRAINERS: Registry[type] = Registry("objective (objective.name)", lazy={
    "grpo": "train.trainers.grpo:GRPOTrainer", "nft": "train.trainers.nft:NFTTrainer"},
    check=subclass_of(_trainer_base))
