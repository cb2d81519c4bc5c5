"""Rewards: plain callables ``reward(inputs: RewardInputs) -> Tensor (B,)`` in a registry, mixed by config weights.

A reward factory takes its options from ``rewards.options.<name>`` (keyword arguments, typed by the factory's
annotations and checked when the config loads) and returns the callable. Higher is better. Non-finite values are
allowed: the sample is masked out of the advantages and counted (see :func:`train.algorithms.advantages.group_advantages`).
A new reward is a factory decorated with ``@REWARDS.register("name")`` (docs/extending.md).

A factory declares what it reads with :func:`editkit.needs.declare_needs`: sample fields (:data:`SAMPLE_FIELDS`,
e.g. ``mask`` or ``target_image``) and run capabilities (:data:`CAPABILITIES`, e.g. ``attention_maps``: the rollout
records attention only when an active reward declares it). :func:`check_reward_needs` compares the declared fields
with the training dataset's columns when the config loads; an undeclared reward needs nothing extra.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from editkit.config import call_with_options, check_options
from editkit.errors import ConfigError, UserError
from editkit.needs import Needs, needs_of, needs_problem
from editkit.registry import Registry, all_of, callable_with

RewardFn = Callable[["RewardInputs"], torch.Tensor]
# the built-ins register themselves when their module is imported (on first lookup)
REWARDS: Registry[Callable[..., RewardFn]] = Registry("reward", lazy={
    "attention_concentration": "train.rewards.attention", "clip_direction": "train.rewards.clip_direction",
    "edit_region": "train.rewards.edit_region", "mllm": "train.rewards.mllm", "pixel_consistency": "train.rewards.pixel",
    "verifier": "train.rewards.verifier"}, check=all_of(callable_with(keywords=True), needs_problem))
register_reward = REWARDS.register  # factory(**options) -> reward

# what a reward may declare it reads: sample field -> the data config's column(s) holding it (any one suffices)
SAMPLE_FIELDS: dict[str, Callable[[Any], list[str]]] = {
    "source_image": lambda data: [data.source_column],
    "instruction": lambda data: list(data.instruction_columns),
    "mask": lambda data: [data.mask_column],
    "edit_type": lambda data: [data.edit_type_column],
    "target_image": lambda data: [data.target_column] if data.target_column else [],
    "target_phrases": lambda data: [data.phrases_column] if data.phrases_column else [],
}
ATTENTION_MAPS = "attention_maps"  # the rollout records the target phrase's attention (RewardInputs.extras)
CAPABILITIES = (ATTENTION_MAPS,)


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


def reward_needs(name: str) -> Needs:
    """What reward ``name`` declared it reads (undeclared: nothing extra); unknown fields are a ConfigError."""
    needs = needs_of(REWARDS.get(name))
    unknown = [f for f in needs.fields if f not in SAMPLE_FIELDS]
    if unknown:
        raise ConfigError(f"reward {name!r} declares an unknown sample field {unknown[0]!r}; choose from: "
                          f"{', '.join(SAMPLE_FIELDS)}")
    unknown = [c for c in needs.capabilities if c not in CAPABILITIES]
    if unknown:
        raise ConfigError(f"reward {name!r} declares an unknown capability {unknown[0]!r}; choose from: "
                          f"{', '.join(CAPABILITIES)}")
    return needs


def needs_capability(weights: dict[str, float], capability: str) -> bool:
    """Whether any configured reward declares ``capability`` (e.g. :data:`ATTENTION_MAPS`)."""
    return any(capability in reward_needs(name).capabilities for name in weights)


def check_reward_needs(weights: dict[str, float], data, columns: list[str] | None, source: str | None = None) -> None:
    """Config-time check: every field a configured reward declares is a column of the training dataset
    (``columns``; None = the dataset is not there yet, nothing to compare). ``data``: the config's ``data``."""
    origin = f"{source}: " if source else ""
    for name in weights:
        for wanted in reward_needs(name).fields:
            candidates = SAMPLE_FIELDS[wanted](data)
            if columns is not None and not any(c in columns for c in candidates):
                held = f"column {' / '.join(repr(c) for c in candidates)}" if candidates else "no column (unset)"
                raise ConfigError(f"{origin}reward {name!r} needs field {wanted!r}, which the training dataset "
                                  f"{data.dataset} lacks ({held}; it has: {', '.join(columns)})")


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
