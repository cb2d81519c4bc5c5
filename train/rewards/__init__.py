"""Rewards: plain callables ``reward(inputs: RewardInputs) -> Tensor (B,)`` in a registry, mixed by config weights.

A reward factory takes its options from ``rewards.options.<name>`` and returns the callable. Higher is better.
Non-finite values are allowed: the sample is masked out of the advantages and counted (see
:func:`train.algorithms.advantages.group_advantages`). New rewards (MLLM judge, verifier, attention concentration) register
with :func:`register_reward` and need nothing else.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch

RewardFn = Callable[["RewardInputs"], torch.Tensor]
REWARDS: dict[str, Callable[..., RewardFn]] = {}


@dataclass
class RewardInputs:
    images: torch.Tensor  # (B, 3, H, W) edited images in [0, 1], float32, CPU
    sources: torch.Tensor  # (B, 3, H, W) source images in [0, 1]
    edit_masks: torch.Tensor  # (B, H, W) bool, True = pixels that SHOULD change
    prompts: list[str]
    edit_types: list[str]
    targets: torch.Tensor | None = None  # (B, 3, H, W) ground-truth edited images, when the dataset has them
    phrases: list[list[str]] | None = None  # per sample: the edit's target phrases (may be empty lists)
    extras: dict[str, Any] = field(default_factory=dict)  # rollout by-products, e.g. "attention" maps


def register_reward(name: str):
    def wrap(factory):
        REWARDS[name] = factory
        return factory

    return wrap


class WeightedRewards:
    """The configured mix: ``total = Σ weight_k · reward_k``; every component is also returned for logging."""

    def __init__(self, weights: dict[str, float], options: dict[str, dict] | None = None):
        from train.rewards import attention, clip_direction, edit_region, mllm, pixel, verifier  # noqa: F401  (register the built-ins)

        unknown = sorted(set(weights) - set(REWARDS))
        if unknown:
            raise KeyError(f"unknown reward(s) {unknown}; registered: {sorted(REWARDS)}")
        if not weights:
            raise ValueError("rewards.weights is empty: at least one reward is needed")
        options = options or {}
        self.weights = dict(weights)
        self.functions = {name: REWARDS[name](**options.get(name, {})) for name in weights}

    def __call__(self, inputs: RewardInputs) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        parts = {}
        total = torch.zeros(inputs.images.shape[0], dtype=torch.float64)
        for name, function in self.functions.items():
            value = torch.as_tensor(function(inputs), dtype=torch.float64).reshape(-1)
            if value.shape[0] != total.shape[0]:
                raise ValueError(f"reward {name!r} returned {value.shape[0]} values for {total.shape[0]} images")
            parts[name] = value
            total = total + self.weights[name] * value
        return total, parts
