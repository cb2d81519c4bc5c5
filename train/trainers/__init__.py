"""Algorithms: one trainer class per objective, in :data:`TRAINERS` keyed by ``objective.name``."""
from __future__ import annotations

from editkit.registry import Registry

TRAINERS: Registry[type] = Registry("objective (objective.name)", lazy={
    "grpo": "train.trainers.grpo:GRPOTrainer", "nft": "train.trainers.nft:NFTTrainer"})
