"""Typed configs of `editkit rrm sft` and `editkit rrm gcpo`, read like every trainer config by
:func:`editkit.config.load_file` (YAML, then ``key.sub=value`` overrides parsed by the field's type; unknown keys,
wrong types and values out of range are one-line errors naming the key).

The sections every trainer has are the editor trainer's own classes (:mod:`train.config`: ``optim``, ``checkpoint``,
``logging``), with the reward model's defaults; what is specific to a reward model is declared here (its data and
its batch of records or pairs) and beside the code that reads it (``model``/``lora``: :mod:`train.rrm.model`,
``format``: :mod:`train.rrm.format`, ``gcpo``: :mod:`train.rrm.gcpo`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Literal, Optional

from editkit.config_meta import Help, Range
from train.runtime import CheckpointConfig, LoggingConfig, OptimConfig
from train.rrm.format import FormatConfig
from train.rrm.gcpo import GCPOConfig
from train.rrm.model import LoraConfig, ModelConfig


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
class DataConfig:
    path: Annotated[str, Help("jsonl (paths relative to its folder) or a datasets directory")] = "data/rrm/sft.jsonl"
    layout: Annotated[
        Literal["auto", "pairs", "editreward"],
        Help("GCPO data layout: auto, pairs (rating-study jsonl) or editreward (TIGER-Lab/EditReward-Data)"),
    ] = "auto"
    split: Annotated[str, Help("dataset split read by the editreward layout from the hub")] = "train"
    limit: Annotated[Optional[int], Help("editreward: read at most this many pairs"), Range(ge=1)] = None


def _optim(learning_rate: float) -> OptimConfig:
    return OptimConfig(learning_rate=learning_rate, weight_decay=0.0)


def _checkpoints() -> CheckpointConfig:
    return CheckpointConfig(every=50, keep_last=2)


# the sections SFT and GCPO declare alike (each with its own defaults)
OutputDir = Annotated[str, Help("where checkpoints, metrics and the trained model/ directory are written")]
Lora = Annotated[LoraConfig, Help("the LoRA (or full fine-tuning) of the language model")]
Format = Annotated[FormatConfig, Help("score range and prompt version of the judgement format")]
Optim = Annotated[OptimConfig, Help("the AdamW optimizer of the trained parameters")]
Loop = Annotated[LoopConfig, Help("the training loop: steps, batch sizes, precision")]
Checkpoints = Annotated[CheckpointConfig, Help("how often checkpoints are written and how many are kept")]
Logging = Annotated[LoggingConfig, Help("where training metrics are logged")]


@dataclass
class SFTRunConfig:
    output_dir: OutputDir = "runs/rrm_sft"
    model: Annotated[
        ModelConfig,
        Help("the Qwen2.5-VL model the reward model starts from"),
    ] = field(default_factory=ModelConfig)
    lora: Lora = field(default_factory=LoraConfig)
    format: Format = field(default_factory=FormatConfig)
    data: Annotated[DataConfig, Help("the SFT trajectories to train on")] = field(default_factory=DataConfig)
    optim: Optim = field(default_factory=lambda: _optim(1e-5))
    train: Loop = field(default_factory=LoopConfig)
    checkpoint: Checkpoints = field(default_factory=_checkpoints)
    logging: Logging = field(default_factory=lambda: LoggingConfig(plots_csv="plots/rrm_sft.csv"))


@dataclass
class GCPORunConfig:
    output_dir: OutputDir = "runs/rrm_gcpo"
    model: Annotated[
        ModelConfig,
        Help("the model to start from: an SFT run's model/ directory"),
    ] = field(default_factory=ModelConfig)
    lora: Lora = field(default_factory=LoraConfig)
    format: Format = field(default_factory=FormatConfig)
    data: Annotated[
        DataConfig,
        Help("the preference pairs to train on"),
    ] = field(default_factory=lambda: DataConfig(path="data/rrm/pairs.jsonl"))
    gcpo: Annotated[
        GCPOConfig,
        Help("the GCPO objective: trajectories, ties, clipping, aggregation"),
    ] = field(default_factory=GCPOConfig)
    optim: Optim = field(default_factory=lambda: _optim(1e-6))
    train: Loop = field(default_factory=lambda: LoopConfig(batch_size=4))
    checkpoint: Checkpoints = field(default_factory=_checkpoints)
    logging: Logging = field(default_factory=lambda: LoggingConfig(plots_csv="plots/rrm_gcpo.csv"))
