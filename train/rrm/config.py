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

from editkit.config_meta import Range
from train.runtime import CheckpointConfig, LoggingConfig, OptimConfig
from train.rrm.format import FormatConfig
from train.rrm.gcpo import GCPOConfig
from train.rrm.model import LoraConfig, ModelConfig


@dataclass
class LoopConfig:
    max_steps: Annotated[int, Range(ge=1)] = 100
    """optimizer updates (SFT) / sampled batches (GCPO)"""
    batch_size: Annotated[int, Range(ge=1)] = 8
    """records (SFT) or preference pairs (GCPO) per step, over all processes"""
    micro_batch_size: Annotated[int, Range(ge=1)] = 8
    """sequences per forward/backward (GCPO: also the generation batch)"""
    seed: Annotated[int, Range(ge=0)] = 0
    """seed of the data order, sampling and LoRA init"""
    mixed_precision: Literal["auto", "no", "bf16"] = "auto"
    """auto (bf16 on GPU, no on CPU), no or bf16"""


@dataclass
class DataConfig:
    path: str = "data/rrm/sft.jsonl"
    """jsonl (paths relative to its folder) or a datasets directory"""
    layout: Literal["auto", "pairs", "editreward"] = "auto"
    """GCPO data layout: auto, pairs (rating-study jsonl) or editreward (TIGER-Lab/EditReward-Data)"""
    split: str = "train"
    """dataset split read by the editreward layout from the hub"""
    limit: Annotated[Optional[int], Range(ge=1)] = None
    """editreward: read at most this many pairs"""


def _optim(learning_rate: float) -> OptimConfig:
    return OptimConfig(learning_rate=learning_rate, weight_decay=0.0)


def _checkpoints() -> CheckpointConfig:
    return CheckpointConfig(every=50, keep_last=2)


@dataclass
class RunConfig:
    """The sections SFT and GCPO share; each run's class sets its own defaults."""

    output_dir: str = "runs/rrm"
    """where checkpoints, metrics and the trained model/ directory are written"""
    model: ModelConfig = field(default_factory=ModelConfig)
    """the Qwen2.5-VL model the reward model starts from"""
    lora: LoraConfig = field(default_factory=LoraConfig)
    """the LoRA (or full fine-tuning) of the language model"""
    format: FormatConfig = field(default_factory=FormatConfig)
    """score range and prompt version of the judgement format"""
    data: DataConfig = field(default_factory=DataConfig)
    """the SFT trajectories to train on"""
    optim: OptimConfig = field(default_factory=lambda: _optim(1e-5))
    """the AdamW optimizer of the trained parameters"""
    train: LoopConfig = field(default_factory=LoopConfig)
    """the training loop: steps, batch sizes, precision"""
    checkpoint: CheckpointConfig = field(default_factory=_checkpoints)
    """how often checkpoints are written and how many are kept"""
    logging: LoggingConfig = field(default_factory=lambda: LoggingConfig(plots_csv="plots/rrm_sft.csv"))
    """where training metrics are logged"""


@dataclass
class SFTRunConfig(RunConfig):
    output_dir: str = "runs/rrm_sft"


@dataclass
class GCPORunConfig(RunConfig):
    output_dir: str = "runs/rrm_gcpo"
    model: ModelConfig = field(default_factory=ModelConfig)
    """the model to start from: an SFT run's model/ directory"""
    data: DataConfig = field(default_factory=lambda: DataConfig(path="data/rrm/pairs.jsonl"))
    """the preference pairs to train on"""
    optim: OptimConfig = field(default_factory=lambda: _optim(1e-6))
    train: LoopConfig = field(default_factory=lambda: LoopConfig(batch_size=4))
    logging: LoggingConfig = field(default_factory=lambda: LoggingConfig(plots_csv="plots/rrm_gcpo.csv"))
    gcpo: GCPOConfig = field(default_factory=GCPOConfig)
    """the GCPO objective: trajectories, ties, clipping, aggregation"""
