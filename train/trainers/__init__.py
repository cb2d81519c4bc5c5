"""Algorithms: one trainer class per objective, keyed by ``objective.name``."""
from __future__ import annotations


def trainer_class(name: str):
    from train.trainers.grpo import GRPOTrainer
    from train.trainers.nft import NFTTrainer

    trainers = {"grpo": GRPOTrainer, "nft": NFTTrainer}
    if name not in trainers:
        raise KeyError(f"unknown objective {name!r}; known: {sorted(trainers)}")
    return trainers[name]
