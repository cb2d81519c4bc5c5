"""Rewards: plain callables ``reward(inputs: RewardInputs) -> Tensor (B,)`` in a registry, mixed by config weights.

A reward factory takes its options from ``rewards.options.<name>`` (keyword arguments, typed by the factory's
annotations and checked when the config loads) and returns the callable. Higher is better. Non-finite values are
allowed: the sample is masked out of the advantages and counted (see :func:`train.algorithms.advantages.group_advantages`).
A new reward is a factory decorated with ``@REWARDS.register("name")`` (docs/extending.md).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from editkit.config import call_with_options, check_options
from editkit.errors import ConfigError, UserError
from editkit.registry import Registry, callable_with

RewardFn = Callable[["RewardInputs"], torch.Tensor]
# the built-ins register themselves when their module is imported (on first lookup)
REWARDS: Registry[Callable[..., RewardFn]] = Registry("reward", lazy={
    "attention_concentration": "train.rewards.attention", "clip_direction": "train.rewards.clip_direction",
    "edit_region": "train.rewards.edit_region", "mllm": "train.rewards.mllm", "pixel_consistency": "train.rewards.pixel",
    "verifier": "train.rewards.verifier"}, check=callable_with(keywords=True))  # factory(**options) -> reward
register_reward = REWARDS.register


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


def build_reward(name: str, options: dict[str, Any] | None = None, source: str | None = None) -> RewardFn:
    """Reward ``name`` built from its options (a mapping, checked and typed like a config section)."""
    return call_with_options(REWARDS.get(name), options, f"rewards.options.{name}", source)


def check_reward_options(weights: dict[str, float], options: dict[str, Any], source: str | None = None) -> None:
    """Config-time check: every weighted reward exists and every options entry fits its factory's signature."""
    origin = f"{source}: " if source else ""
    for where, names in (("rewards.weights", weights), ("rewards.options", options)):
        for name in names:
            try:
                REWARDS.get(name)  # a dotted path ("my_rewards:sharpness") is imported and checked here
            except UserError as error:
                raise ConfigError(f"{origin}{where}: {error}") from None
    for name, values in options.items():
        check_options(REWARDS.get(name), values, f"rewards.options.{name}", source)


class WeightedRewards:
    """The configured mix: ``total = Σ weight_k · reward_k``; every component is also returned for logging."""

    def __init__(self, weights: dict[str, float], options: dict[str, dict] | None = None):
        if not weights:
            raise ConfigError("rewards.weights is empty: at least one reward is needed")
        for name in weights:
            REWARDS.get(name)  # an unknown name fails before any reward is built
        options = options or {}
        self.weights = dict(weights)
        self.functions = {name: build_reward(name, options.get(name)) for name in weights}

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
