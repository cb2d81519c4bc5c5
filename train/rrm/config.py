"""Typed configs of `editkit rrm sft` and `editkit rrm gcpo`: YAML + ``key.sub=value`` overrides, unknown keys are
errors. Every knob is documented where it is declared."""
from __future__ import annotations

from train.rrm.errors import UserError

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, Optional, TypeVar

from editkit.config import from_dict, load_yaml, parse_yaml
from train.rrm.format import FormatConfig
from train.rrm.gcpo import GCPOConfig
from train.rrm.model import LoraConfig, ModelConfig
from editkit.config_meta import Help, Range

T = TypeVar("T")


@dataclass
class OptimConfig:
    learning_rate: Annotated[float, Help("AdamW learning rate"), Range(gt=0, le=1)] = 1e-5
    weight_decay: Annotated[float, Help("AdamW decoupled weight decay"), Range(ge=0)] = 0.0
    betas: Annotated[
        list[float],
        Help("AdamW [beta1, beta2] moment decay rates"),
        Range(ge=0, lt=1),
    ] = field(default_factory=lambda: [0.9, 0.999])
    max_grad_norm: Annotated[
        float,
        Help("gradient norm clip before each update (0 = no clipping)"),
        Range(ge=0),
    ] = 1.0


@dataclass
class LoopConfig:
    max_steps: Annotated[int, Help("optimizer updates (SFT) / sampled batches (GCPO)"), Range(ge=1)] = 100
    batch_size: Annotated[
        int,
        Help("records (SFT) or preference pairs (GCPO) per step, over all processes"),
        Range(ge=1),
    ] = 8
    micro_batch_size: Annotated[
        int,
        Help("sequences per forward/backward (GCPO: also the generation batch)"),
        Range(ge=1),
    ] = 8
    seed: Annotated[int, Help("seed of the data order, sampling and LoRA init"), Range(ge=0)] = 0
    mixed_precision: Annotated[
        Literal["auto", "no", "bf16"],
        Help("auto (bf16 on GPU, no on CPU), no or bf16"),
    ] = "auto"


@dataclass
class CheckpointConfig:
    every: Annotated[int, Help("steps between checkpoints (0 = only at the end)"), Range(ge=0)] = 50
    keep_last: Annotated[int, Help("how many most recent checkpoints are kept on disk"), Range(ge=1)] = 2


@dataclass
class DataConfig:
    path: Annotated[str, Help("jsonl (paths relative to its folder) or a datasets directory")] = "data/rrm/sft.jsonl"
    layout: Annotated[
        Literal["auto", "pairs", "editreward"],
        Help("GCPO data layout: auto, pairs (rating-study jsonl) or editreward (TIGER-Lab/EditReward-Data)"),
    ] = "auto"
    split: Annotated[str, Help("dataset split read by the editreward layout from the hub")] = "train"
    limit: Annotated[Optional[int], Help("editreward: read at most this many pairs"), Range(ge=1)] = None


@dataclass
class SFTRunConfig:
    output_dir: Annotated[
        str,
        Help("where checkpoints and the trained model/ directory are written"),
    ] = "runs/rrm_sft"
    model: Annotated[
        ModelConfig,
        Help("the Qwen2.5-VL model the reward model starts from"),
    ] = field(default_factory=ModelConfig)
    lora: Annotated[
        LoraConfig,
        Help("the LoRA (or full fine-tuning) of the language model"),
    ] = field(default_factory=LoraConfig)
    format: Annotated[
        FormatConfig,
        Help("score range and prompt version of the judgement format"),
    ] = field(default_factory=FormatConfig)
    data: Annotated[DataConfig, Help("the SFT trajectories to train on")] = field(default_factory=DataConfig)
    optim: Annotated[OptimConfig, Help("the AdamW optimizer")] = field(default_factory=OptimConfig)
    train: Annotated[
        LoopConfig,
        Help("the training loop: steps, batch sizes, precision"),
    ] = field(default_factory=LoopConfig)
    checkpoint: Annotated[
        CheckpointConfig,
        Help("how often checkpoints are written and how many are kept"),
    ] = field(default_factory=CheckpointConfig)


@dataclass
class GCPORunConfig:
    output_dir: Annotated[
        str,
        Help("where checkpoints and the trained model/ directory are written"),
    ] = "runs/rrm_gcpo"
    model: Annotated[
        ModelConfig,
        Help("the model to start from: an SFT run's model/ directory"),
    ] = field(default_factory=ModelConfig)
    lora: Annotated[
        LoraConfig,
        Help("the LoRA (or full fine-tuning) of the language model"),
    ] = field(default_factory=LoraConfig)
    format: Annotated[
        FormatConfig,
        Help("score range and prompt version of the judgement format"),
    ] = field(default_factory=FormatConfig)
    data: Annotated[
        DataConfig,
        Help("the preference pairs to train on"),
    ] = field(default_factory=lambda: DataConfig(path="data/rrm/pairs.jsonl"))
    gcpo: Annotated[
        GCPOConfig,
        Help("the GCPO objective: trajectories, ties, clipping, aggregation"),
    ] = field(default_factory=GCPOConfig)
    optim: Annotated[
        OptimConfig,
        Help("the AdamW optimizer"),
    ] = field(default_factory=lambda: OptimConfig(learning_rate=1e-6))
    train: Annotated[
        LoopConfig,
        Help("the training loop: steps, batch sizes, precision"),
    ] = field(default_factory=lambda: LoopConfig(batch_size=4))
    checkpoint: Annotated[
        CheckpointConfig,
        Help("how often checkpoints are written and how many are kept"),
    ] = field(default_factory=CheckpointConfig)


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
        node[parts[-1]] = parse_yaml(text, f"override {override!r}")
    return values


def load_run_config(cls: type[T], path: Optional[str | Path] = None, overrides: Optional[list[str]] = None) -> T:
    if path is not None and not Path(path).is_file():
        raise UserError(f"config file {path} not found")
    values = load_yaml(path) if path else {}
    try:
        config = from_dict(cls, apply_overrides(values, list(overrides or [])), cls.__name__)
    except (TypeError, ValueError) as error:  # unknown keys, bad values: the user's config, not a bug
        raise UserError(str(error)) from None
    return config


def to_dict(config) -> dict[str, Any]:
    return dataclasses.asdict(config)
