"""Algorithms: one trainer class per objective, in :data:`TRAINERS` keyed by ``objective.name``."""
from __future__ import annotations

from editkit.registry import Registry, subclass_of

TRAINERS: Registry[type] = Registry("objective (objective.name)", lazy={
    "grpo": "train.trainers.grpo:GRPOTrainer", "nft": "train.trainers.nft:NFTTrainer"},
    check=subclass_of("train.trainers.base:Trainer"))  # imported when an entry is checked (torch)
