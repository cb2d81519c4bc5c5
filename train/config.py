"""Typed trainer configuration: nested dataclasses loaded from YAML, with ``key.sub=value`` overrides.

Loaded by the core's typed loader (:mod:`editkit.config`): unknown keys and wrong value types are errors naming the
key and the file, before any model is loaded; overrides are parsed by the type of the field they set. Reward
options (``rewards.options.<name>``) are checked against the reward factory's signature at load time too. Each
algorithmic module owns its config dataclass (advantages, GRPO, NFT, regularizer); this file assembles them. See ``train/configs/*.yaml`` and the README's
"Post-training" section for the reference.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from editkit.config import ConfigError, load_file
from train.algorithms.advantages import AdvantageConfig
from train.algorithms.grpo import GRPOConfig
from train.algorithms.nft import NFTConfig
from train.algorithms.regularizer import RegularizerConfig
from train.algorithms.region_advantages import RegionAdvantageConfig
from train.parallel import PARALLELISMS, FSDPConfig


@dataclass
class ModelConfig:
    adapter: str = "flux_kontext"  # key in train.adapters.ADAPTERS
    path: str = "black-forest-labs/FLUX.1-Kontext-dev"  # hub id or local dir for from_pretrained
    guidance_scale: float = 2.5  # Kontext's distilled guidance embedding (no true CFG)
    max_sequence_length: int = 512  # T5 tokens
    true_cfg_scale: float = 4.0  # Qwen-Image-Edit true CFG with norm rescale (> 1 enables it); Kontext ignores it
    negative_prompt: str = " "  # Qwen-Image-Edit's negative prompt for true CFG (the pipeline's usual " ")
    gradient_checkpointing: bool = False
    # keep the frozen text encoders in CPU memory, on the device only while a step's prompts are encoded (once)
    offload_text_encoders: bool = False


@dataclass
class LoraConfig:
    rank: int = 32
    alpha: int = 64
    dropout: float = 0.0
    target_modules: list[str] = field(default_factory=lambda: ["to_k", "to_q", "to_v", "to_out.0"])
    init_from: str | None = None  # a saved LoRA dir to start from


@dataclass
class DataConfig:
    dataset: str = "data/export/dataset"  # a `datasets.save_to_disk` dir from `editkit curate export`
    resolution: list[int] = field(default_factory=lambda: [512, 512])  # [height, width] of training images
    eval_size: int = 8  # rows held out (deterministic, by seed) for evaluation
    source_column: str = "source_image"
    instruction_columns: list[str] = field(default_factory=lambda: ["instruction_refined", "instruction"])
    mask_column: str = "mask"  # COCO RLE of the pixels that SHOULD change
    edit_type_column: str = "edit_type"
    target_column: str | None = "edited_image"  # ground-truth edited image (optional; rewards that need it say so)
    phrases_column: str | None = "target_phrases"  # the edit's target phrases (optional; attention reward)
    center_crop: bool = False  # crop to the centred square before resizing (CoCoEdit), else stretch to resolution
    resample: str = "bicubic"  # image resize filter: "bicubic" | "lanczos" (CoCoEdit); masks always nearest


@dataclass
class SamplerConfig:
    num_steps: int = 10  # denoising steps per rollout
    sde: str = "flow_sde"  # "flow_sde" | "cps" (GRPO); NFT samples with the deterministic ODE
    noise_level: float = 0.7  # η of the SDE
    sde_window: list[int] = field(default_factory=lambda: [0, 10])  # [start, end) step indices run as SDE
    train_steps: int = 0  # how many of the window's steps to train on per iteration (0 = all; else seeded subset)
    region_noise: bool = False  # RC-GRPO: a group shares the initial noise outside the edit mask (GRPO and NFT)
    solver: str = "euler"  # NFT rollout ODE solver: "euler" | "dpm2" (CoCoEdit's deterministic multistep DPM-Solver)
    # NFT rollouts with solver euler: run the sde_window's steps as the Flow-SDE at noise_level instead of the ODE.
    # NFT needs no log-probs, so any sampler works; the extra noise gives a group diverse samples when the model
    # maps every initial noise to nearly the same image. CoCoEdit: false (deterministic rollouts).
    nft_sde: bool = False


@dataclass
class RewardConfig:
    weights: dict[str, float] = field(default_factory=lambda: {"pixel_consistency": 1.0})  # name -> weight
    options: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> kwargs of its factory
    # score each rollout micro-batch on a background thread while the next one rolls out (hides an HTTP judge's
    # latency; same values, same order); false: score the whole batch after the rollout
    overlap: bool = True


@dataclass
class ObjectiveConfig:
    name: str = "nft"  # "grpo" | "nft"
    grpo: GRPOConfig = field(default_factory=GRPOConfig)
    nft: NFTConfig = field(default_factory=NFTConfig)
    regularizer: RegularizerConfig = field(default_factory=RegularizerConfig)


@dataclass
class OptimConfig:
    learning_rate: float = 1e-4
    weight_decay: float = 1e-4
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    max_grad_norm: float = 1.0
    warmup_steps: int = 0  # linear warm-up of the LR, then constant
    gradient_accumulation: int = 0  # backward passes per optimizer update; 0 = one update per iteration


@dataclass
class TrainLoopConfig:
    max_steps: int = 100  # iterations (sample -> score -> advantages -> optimise)
    groups_per_step: int = 4  # prompts per iteration, over all processes
    group_size: int = 8  # samples per prompt
    micro_batch_size: int = 2  # rollout AND training batch (same size keeps the first ratio exactly 1)
    seed: int = 0
    mixed_precision: str = "auto"  # "auto" (bf16 on GPU, no on CPU) | "no" | "bf16" | "fp16"
    parallelism: str = "ddp"  # "ddp" (a full model per process) | "fsdp2" (the transformer sharded over processes)
    fsdp: FSDPConfig = field(default_factory=FSDPConfig)  # with parallelism fsdp2


@dataclass
class EvalConfig:
    every: int = 10  # iterations between evaluations (0 = never; always at the end if > 0)
    num_samples: int = 8  # held-out rows evaluated
    seed: int = 1234  # fixed noise seed


@dataclass
class CheckpointConfig:
    every: int = 10  # iterations between checkpoints (0 = only at the end)
    keep_last: int = 3


@dataclass
class LoggingConfig:
    tensorboard: bool = True
    wandb: bool = False  # used only if wandb is installed
    wandb_project: str = "editkit"
    plots_csv: str = "plots/train_rewards.csv"  # per-step reward curve for `dvc plots` (relative to output_dir)
    progress: bool = True


@dataclass
class TrainConfig:
    output_dir: str = "runs/train"
    model: ModelConfig = field(default_factory=ModelConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)
    data: DataConfig = field(default_factory=DataConfig)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    rewards: RewardConfig = field(default_factory=RewardConfig)
    advantages: AdvantageConfig = field(default_factory=AdvantageConfig)
    region_advantages: RegionAdvantageConfig = field(default_factory=RegionAdvantageConfig)  # Edit-GRPO
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainLoopConfig = field(default_factory=TrainLoopConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)

    def validate(self) -> "TrainConfig":
        from train.trainers import TRAINERS

        if self.objective.name not in TRAINERS:
            raise ValueError(f"objective.name must be one of {TRAINERS.names()}, got {self.objective.name!r}")
        if self.objective.regularizer.enabled and self.objective.name != "nft":
            raise ValueError("objective.regularizer needs the NFT objective (it uses the positive/negative branches)")
        if self.train.parallelism not in PARALLELISMS:
            raise ValueError(f"train.parallelism must be one of {list(PARALLELISMS)}, got {self.train.parallelism!r}")
        if len(self.data.resolution) != 2:
            raise ValueError("data.resolution must be [height, width]")
        if self.train.group_size < 2:
            raise ValueError("train.group_size must be >= 2 (advantages compare samples of one prompt)")
        if self.region_advantages.enabled and self.objective.name != "grpo":
            raise ValueError("region_advantages.enabled is implemented for the GRPO objective only")
        if self.region_advantages.enabled:
            self.region_advantages.check(self.rewards.weights)
        start, end = self.sampler.sde_window
        if not 0 <= start < end <= self.sampler.num_steps:
            raise ValueError(f"sampler.sde_window {self.sampler.sde_window} must lie in [0, {self.sampler.num_steps}]")
        if self.sampler.nft_sde and self.sampler.solver != "euler":
            raise ValueError("sampler.nft_sde needs sampler.solver: euler (the DPM-Solver rollouts are deterministic)")
        return self


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> TrainConfig:
    """Defaults <- the YAML file <- ``key.sub=value`` overrides, checked (types, keys, reward options, consistency)."""
    config = load_file(TrainConfig, path, list(overrides or []))
    source = str(path) if path else "command line"
    try:
        config.validate()
    except ConfigError:
        raise
    except ValueError as error:
        raise ConfigError(f"{source}: {error}") from None
    from train.rewards import check_reward_options

    check_reward_options(config.rewards.weights, config.rewards.options, source)
    return config


def to_dict(config: TrainConfig) -> dict[str, Any]:
    return dataclasses.asdict(config)
