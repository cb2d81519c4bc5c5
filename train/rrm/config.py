"""Typed configs of `editkit rrm sft` and `editkit rrm gcpo`: YAML + ``key.sub=value`` overrides, unknown keys are
errors. Every knob is documented where it is declared."""
from __future__ import annotations

from train.rrm.errors import UserError

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, TypeVar

import yaml

from editkit.config import from_dict
from train.rrm.format import FormatConfig
from train.rrm.gcpo import GCPOConfig
from train.rrm.model import LoraConfig, ModelConfig

T = TypeVar("T")


@dataclass
class OptimConfig:
    learning_rate: float = 1e-5
    weight_decay: float = 0.0
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    max_grad_norm: float = 1.0  # 0 = no clipping


@dataclass
class LoopConfig:
    max_steps: int = 100  # optimizer updates (SFT) / sampled batches (GCPO)
    batch_size: int = 8  # records (SFT) or preference pairs (GCPO) per step, over all processes
    micro_batch_size: int = 8  # sequences per forward/backward (GCPO: also the generation batch)
    seed: int = 0
    mixed_precision: str = "auto"  # auto (bf16 on GPU, no on CPU) | no | bf16


@dataclass
class CheckpointConfig:
    every: int = 50  # steps between checkpoints (0 = only at the end)
    keep_last: int = 2


@dataclass
class DataConfig:
    path: str = "data/rrm/sft.jsonl"  # jsonl (paths relative to its folder) or a datasets directory
    layout: str = "auto"  # GCPO: auto | pairs (rating-study jsonl) | editreward (TIGER-Lab/EditReward-Data)
    split: str = "train"  # editreward from the hub
    limit: Optional[int] = None  # editreward: read at most this many pairs


@dataclass
class SFTRunConfig:
    output_dir: str = "runs/rrm_sft"
    model: ModelConfig = field(default_factory=ModelConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)
    format: FormatConfig = field(default_factory=FormatConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: LoopConfig = field(default_factory=LoopConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)


@dataclass
class GCPORunConfig:
    output_dir: str = "runs/rrm_gcpo"
    model: ModelConfig = field(default_factory=ModelConfig)  # start from an SFT run's model/ directory
    lora: LoraConfig = field(default_factory=LoraConfig)
    format: FormatConfig = field(default_factory=FormatConfig)
    data: DataConfig = field(default_factory=lambda: DataConfig(path="data/rrm/pairs.jsonl"))
    gcpo: GCPOConfig = field(default_factory=GCPOConfig)
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(learning_rate=1e-6))
    train: LoopConfig = field(default_factory=lambda: LoopConfig(batch_size=4))
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)


def apply_overrides(values: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    for override in overrides:
        if "=" not in override:
            raise UserError(f"override {override!r} must look like key.sub=value")
        key, text = override.split("=", 1)
        node = values
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise UserError(f"override {override!r}: {part} is not a section")
        node[parts[-1]] = yaml.safe_load(text)
    return values


def load_run_config(cls: type[T], path: Optional[str | Path] = None, overrides: Optional[list[str]] = None) -> T:
    if path is not None and not Path(path).is_file():
        raise UserError(f"config file {path} not found")
    values = (yaml.safe_load(Path(path).read_text()) if path else None) or {}
    try:
        config = from_dict(cls, apply_overrides(values, list(overrides or [])), cls.__name__)
    except (TypeError, ValueError) as error:  # unknown keys, bad values: the user's config, not a bug
        raise UserError(str(error)) from None
    if config.data.layout not in ("auto", "pairs", "editreward"):
        raise UserError(f"data.layout must be auto, pairs or editreward, got {config.data.layout!r}")
    if config.train.batch_size < 1 or config.train.micro_batch_size < 1 or config.train.max_steps < 0:
        raise UserError("train.batch_size and train.micro_batch_size must be >= 1, train.max_steps >= 0")
    return config


def to_dict(config) -> dict[str, Any]:
    return dataclasses.asdict(config)
