"""The objectives: ``objective.name`` -> the trainer class that optimises it (:mod:`train.trainers`).

Declared here, below both the config (which checks the name at load time) and the trainers (which import the
config), so neither imports the other's package; the trainers load lazily, on first use of an entry.
"""
from __future__ import annotations

from editkit.registry import Registry, subclass_of

TRAINERS: Registry[type] = Registry("objective (objective.name)", lazy={
    "grpo": "train.trainers.grpo:GRPOTrainer", "nft": "train.trainers.nft:NFTTrainer"},
    check=subclass_of("train.trainers.base:Trainer"))  # imported when an entry is checked (torch)
