"""Typed trainer configuration: nested dataclasses loaded from YAML, with ``key.sub=value`` overrides.

Loaded by the core's typed loader (:mod:`editkit.config`): unknown keys and wrong value types are errors naming the
key and the file, before any model is loaded; overrides are parsed by the type of the field they set. Reward
options (``rewards.options.<name>``) are checked against the reward factory's signature at load time too. Each
algorithmic module owns its config dataclass (advantages, GRPO, NFT, regularizer); this file assembles them. See
``train/configs/*.yaml`` and docs/training.md ("Config reference") for the reference.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from editkit import export_columns as columns
from editkit.config import ConfigError, load_file
from train.algorithms.advantages import AdvantageConfig
from train.algorithms.grpo import GRPOConfig
from train.algorithms.nft import NFTConfig
from train.algorithms.regularizer import RegularizerConfig
from train.algorithms.region_advantages import RegionAdvantageConfig
from train.parallel import PARALLELISMS, FSDPConfig
from train.runtime import CheckpointConfig, LoggingConfig, OptimConfig
from editkit.config_meta import Help, Range


@dataclass
class ModelConfig:
    adapter: Annotated[
        str,
        Help("the model adapter: a key of train.adapters.ADAPTERS (flux_kontext, qwen_image_edit, ...)"),
    ] = "flux_kontext"
    path: Annotated[
        str,
        Help("hub id or local directory the adapter loads with from_pretrained"),
    ] = "black-forest-labs/FLUX.1-Kontext-dev"
    guidance_scale: Annotated[
        float,
        Help("the distilled guidance embedding's value: FLUX.1-Kontext and FLUX.2 [dev] (no true CFG)"),
        Range(ge=0),
    ] = 2.5
    max_sequence_length: Annotated[
        int,
        Help("T5 text tokens per prompt (longer prompts are truncated)"),
        Range(gt=0),
    ] = 512
    true_cfg_scale: Annotated[
        float,
        Help("true CFG scale (> 1 enables it): Qwen-Image-Edit (with norm rescale), FLUX.2 [klein] and Qwen-Image "
             "2.1 (plain); the guidance-distilled FLUX.1-Kontext and FLUX.2 [dev] ignore it"),
        Range(ge=0),
    ] = 4.0
    negative_prompt: Annotated[
        str,
        Help("the negative prompt of true CFG for Qwen-Image-Edit and Qwen-Image 2.1 (the pipeline's usual \" \")"),
    ] = " "
    gradient_checkpointing: Annotated[
        bool,
        Help("recompute the transformer's activations in backward to save memory"),
    ] = False
    offload_text_encoders: Annotated[
        bool,
        Help("keep the frozen text encoders in CPU memory, on the device only while a step's prompts are encoded "
             "(once)"),
    ] = False


@dataclass
class LoraConfig:
    rank: Annotated[int, Help("rank of each LoRA update matrix"), Range(gt=0)] = 32
    alpha: Annotated[int, Help("LoRA scaling numerator: the update is scaled by alpha / rank"), Range(gt=0)] = 64
    dropout: Annotated[float, Help("dropout probability on the LoRA input"), Range(ge=0, lt=1)] = 0.0
    target_modules: Annotated[
        list[str],
        Help("names of the transformer's linear layers that get a LoRA"),
    ] = field(default_factory=lambda: ["to_k", "to_q", "to_v", "to_out.0"])
    init_from: Annotated[str | None, Help("a saved LoRA directory to start from (null: a fresh LoRA)")] = None


@dataclass
class DataConfig:
    dataset: Annotated[
        str,
        Help("a `datasets.save_to_disk` dir from `editkit curate export`"),
    ] = "data/export/dataset"
    resolution: Annotated[
        list[int],
        Help("[height, width] in pixels the training images are resized to"),
        Range(gt=0, le=8192),
    ] = field(default_factory=lambda: [512, 512])
    eval_size: Annotated[int, Help("rows held out (deterministic, by seed) for evaluation"), Range(ge=0)] = 8
    source_column: Annotated[str, Help("dataset column holding the source image")] = columns.SOURCE_IMAGE
    instruction_columns: Annotated[
        list[str],
        Help("instruction columns, first non-empty one wins (refined before raw)"),
    ] = field(default_factory=lambda: list(columns.INSTRUCTION_COLUMNS))
    mask_column: Annotated[str, Help("COCO RLE of the pixels that SHOULD change")] = columns.MASK
    edit_type_column: Annotated[
        str,
        Help("dataset column holding the edit type (editkit.taxonomy name)"),
    ] = columns.EDIT_TYPE
    target_column: Annotated[
        str | None,
        Help("ground-truth edited image (optional; rewards that need it say so)"),
    ] = columns.EDITED_IMAGE
    phrases_column: Annotated[
        str | None,
        Help("the edit's target phrases (optional; attention reward)"),
    ] = columns.TARGET_PHRASES
    center_crop: Annotated[
        bool,
        Help("crop to the centred square before resizing (CoCoEdit), else stretch to resolution"),
    ] = False
    resample: Annotated[
        Literal["bicubic", "lanczos"],
        Help("image resize filter: \"bicubic\" | \"lanczos\" (CoCoEdit); masks always nearest"),
    ] = "bicubic"


@dataclass
class SamplerConfig:
    num_steps: Annotated[int, Help("denoising steps per rollout"), Range(ge=1)] = 10
    sde: Annotated[
        Literal["flow_sde", "cps"],
        Help("\"flow_sde\" | \"cps\" (GRPO); NFT samples with the deterministic ODE"),
    ] = "flow_sde"
    noise_level: Annotated[float, Help("η of the SDE: how much noise each SDE step injects"), Range(ge=0)] = 0.7
    sde_window: Annotated[
        list[int],
        Help("[start, end) step indices run as SDE (within num_steps)"),
        Range(ge=0),
    ] = field(default_factory=lambda: [0, 10])
    train_steps: Annotated[
        int,
        Help("how many of the window's steps to train on per iteration (0 = all; else seeded subset)"),
        Range(ge=0),
    ] = 0
    region_noise: Annotated[
        bool,
        Help("RC-GRPO: a group shares the initial noise outside the edit mask (GRPO and NFT)"),
    ] = False
    solver: Annotated[
        Literal["euler", "dpm2"],
        Help("NFT rollout ODE solver: \"euler\" | \"dpm2\" (CoCoEdit's deterministic multistep DPM-Solver)"),
    ] = "euler"
    nft_sde: Annotated[
        bool,
        Help("NFT rollouts with solver euler: run the sde_window's steps as the Flow-SDE at noise_level instead of "
             "the ODE. NFT needs no log-probs, so any sampler works; the extra noise gives a group diverse samples "
             "when the model maps every initial noise to nearly the same image. CoCoEdit: false (deterministic "
             "rollouts)."),
    ] = False


@dataclass
class RewardConfig:
    weights: Annotated[
        dict[str, float],
        Help("reward name -> weight in the summed reward (names of train.rewards.REWARDS)"),
            ] = field(default_factory=lambda: {"pixel_consistency": 1.0})
    options: Annotated[
        dict[str, dict[str, Any]],
        Help("reward name -> keyword options of its factory (checked against its signature)"),
    ] = field(default_factory=dict)
    overlap: Annotated[
        bool,
        Help("score each rollout micro-batch on a background thread while the next one rolls out (hides an HTTP "
             "judge's latency; same values, same order); false: score the whole batch after the rollout"),
    ] = True


@dataclass
class ObjectiveConfig:
    name: Annotated[str, Help("the policy objective: \"grpo\" or \"nft\" (a key of train.trainers.TRAINERS)")] = "nft"
    grpo: Annotated[
        GRPOConfig,
        Help("GRPO's ratio clip and KL weight (objective grpo)"),
    ] = field(default_factory=GRPOConfig)
    nft: Annotated[NFTConfig, Help("DiffusionNFT's settings (objective nft)")] = field(default_factory=NFTConfig)
    regularizer: Annotated[
        RegularizerConfig,
        Help("the region regularizer added to the NFT loss"),
    ] = field(default_factory=RegularizerConfig)


@dataclass
class TrainLoopConfig:
    max_steps: Annotated[
        int,
        Help("training iterations (sample -> score -> advantages -> optimise); at least 1"),
        Range(ge=1),
    ] = 100
    groups_per_step: Annotated[int, Help("prompts per iteration, over all processes"), Range(ge=1)] = 4
    group_size: Annotated[int, Help("samples per prompt (at least 2: advantages compare them)"), Range(ge=2)] = 8
    micro_batch_size: Annotated[
        int,
        Help("rollout AND training batch (same size keeps the first ratio exactly 1)"),
        Range(ge=1),
    ] = 2
    seed: Annotated[int, Help("seed of the prompt order, initial noise and LoRA init"), Range(ge=0)] = 0
    mixed_precision: Annotated[
        Literal["auto", "no", "bf16", "fp16"],
        Help("\"auto\" = bf16 on GPU and no on CPU; or \"no\", \"bf16\", \"fp16\""),
    ] = "auto"
    parallelism: Annotated[
        str,
        Help("\"ddp\" (a full model per process) | \"fsdp2\" (the transformer sharded over processes)"),
    ] = "ddp"
    fsdp: Annotated[
        FSDPConfig,
        Help("FSDP2 sharding options, used with parallelism fsdp2"),
    ] = field(default_factory=FSDPConfig)
    reuse_rollout_graph: Annotated[
        Literal["auto", "on", "off"],
        Help("GRPO: run the rollout's forwards of the trained SDE steps with gradients and back-propagate the loss "
             "through them instead of recomputing those forwards in the update (the same gradients, one forward "
             "less per trained step; activations are held from the rollout until the update). Needs an on-policy "
             "update (one optimizer update per iteration), one process and lora.dropout 0. \"auto\" = on when "
             "those hold, keeping graphs while the measured activations fit reuse_rollout_graph_budget_gib (the "
             "rest are recomputed); \"on\" = always (an error where it cannot apply), no budget; \"off\" = "
             "recompute. NFT ignores it"),
    ] = "auto"
    reuse_rollout_graph_budget_gib: Annotated[
        float,
        Help("memory for the kept rollout activations with reuse_rollout_graph auto, in GiB (0 = half of the "
             "device's free memory when sampling starts)"),
        Range(ge=0),
    ] = 0.0


@dataclass
class EvalConfig:
    every: Annotated[
        int,
        Help("iterations between evaluations (0 = never; always at the end if > 0)"),
        Range(ge=0),
    ] = 10
    num_samples: Annotated[int, Help("held-out rows evaluated"), Range(ge=1)] = 8
    seed: Annotated[int, Help("fixed noise seed of the held-out evaluation"), Range(ge=0)] = 1234


@dataclass
class TrainConfig:
    output_dir: Annotated[str, Help("where checkpoints, the final LoRA, logs and plots are written")] = "runs/train"
    model: Annotated[
        ModelConfig,
        Help("the base editing model and how it is run"),
    ] = field(default_factory=ModelConfig)
    lora: Annotated[LoraConfig, Help("the LoRA adapter that is trained")] = field(default_factory=LoraConfig)
    data: Annotated[
        DataConfig,
        Help("the curated dataset and how its rows become training prompts"),
    ] = field(default_factory=DataConfig)
    sampler: Annotated[
        SamplerConfig,
        Help("how rollouts are sampled (steps, SDE, window)"),
    ] = field(default_factory=SamplerConfig)
    rewards: Annotated[
        RewardConfig,
        Help("which rewards score the rollouts and with what weights"),
    ] = field(default_factory=RewardConfig)
    advantages: Annotated[
        AdvantageConfig,
        Help("how rewards become advantages within a group"),
    ] = field(default_factory=AdvantageConfig)
    region_advantages: Annotated[
        RegionAdvantageConfig,
        Help("Edit-GRPO: per-token advantages inside and outside the edit mask"),
    ] = field(default_factory=RegionAdvantageConfig)
    objective: Annotated[
        ObjectiveConfig,
        Help("the policy objective (GRPO or NFT) and its regularizer"),
    ] = field(default_factory=ObjectiveConfig)
    optim: Annotated[OptimConfig, Help("the AdamW optimizer of the LoRA")] = field(default_factory=OptimConfig)
    train: Annotated[
        TrainLoopConfig,
        Help("the training loop: steps, group sizes, precision, parallelism"),
    ] = field(default_factory=TrainLoopConfig)
    eval: Annotated[EvalConfig, Help("the held-out evaluation during training")] = field(default_factory=EvalConfig)
    checkpoint: Annotated[
        CheckpointConfig,
        Help("how often checkpoints are written and how many are kept"),
    ] = field(default_factory=CheckpointConfig)
    logging: Annotated[
        LoggingConfig,
        Help("where training metrics are logged"),
    ] = field(default_factory=LoggingConfig)

    def validate(self) -> "TrainConfig":
        from train.objectives import TRAINERS

        if self.objective.name not in TRAINERS:
            raise ValueError(f"objective.name must be one of {TRAINERS.names()}, got {self.objective.name!r}")
        if self.objective.regularizer.enabled and self.objective.name != "nft":
            raise ValueError("objective.regularizer needs the NFT objective (it uses the positive/negative branches)")
        if self.train.parallelism not in PARALLELISMS:
            raise ValueError(f"train.parallelism must be one of {list(PARALLELISMS)}, got {self.train.parallelism!r}")
        if len(self.data.resolution) != 2:
            raise ValueError("data.resolution must be [height, width]")
        if len(self.optim.betas) != 2:
            raise ValueError(f"optim.betas must be [beta1, beta2], got {self.optim.betas}")
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
    from train.data import dataset_columns
    from train.rewards import check_reward_needs, check_reward_options

    check_reward_options(config.rewards.weights, config.rewards.options, source)
    # a reward reading a field the dataset lacks fails here, before any model loads (its metadata only is read)
    check_reward_needs(config.rewards.weights, config.data, dataset_columns(config.data.dataset), source)
    return config


def to_dict(config: TrainConfig) -> dict[str, Any]:
    return dataclasses.asdict(config)
