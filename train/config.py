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
from editkit.config_meta import Range


@dataclass
class ModelConfig:
    adapter: str = "flux_kontext"
    """the model adapter: a key of train.adapters.ADAPTERS (flux_kontext, qwen_image_edit, ...)"""
    path: str = "black-forest-labs/FLUX.1-Kontext-dev"
    """hub id or local directory the adapter loads with from_pretrained"""
    guidance_scale: Annotated[float, Range(ge=0)] = 2.5
    """the distilled guidance embedding's value: FLUX.1-Kontext and FLUX.2 [dev] (no true CFG)"""
    max_sequence_length: Annotated[int, Range(gt=0)] = 512
    """T5 text tokens per prompt (longer prompts are truncated)"""
    true_cfg_scale: Annotated[float, Range(ge=0)] = 4.0
    """true CFG scale (> 1 enables it): Qwen-Image-Edit (with norm rescale), FLUX.2 [klein] and Qwen-Image 2.1 (plain);
    the guidance-distilled FLUX.1-Kontext and FLUX.2 [dev] ignore it"""
    negative_prompt: str = " "
    """the negative prompt of true CFG for Qwen-Image-Edit and Qwen-Image 2.1 (the pipeline's usual " ")"""
    gradient_checkpointing: bool = False
    """recompute the transformer's activations in backward to save memory"""
    offload_text_encoders: bool = False
    """keep the frozen text encoders in CPU memory, on the device only while a step's prompts are encoded (once)"""


@dataclass
class LoraConfig:
    rank: Annotated[int, Range(gt=0)] = 32
    """rank of each LoRA update matrix"""
    alpha: Annotated[int, Range(gt=0)] = 64
    """LoRA scaling numerator: the update is scaled by alpha / rank"""
    dropout: Annotated[float, Range(ge=0, lt=1)] = 0.0
    """dropout probability on the LoRA input"""
    target_modules: list[str] = field(default_factory=lambda: ["to_k", "to_q", "to_v", "to_out.0"])
    """names of the transformer's linear layers that get a LoRA"""
    init_from: str | None = None
    """a saved LoRA directory to start from (null: a fresh LoRA)"""


@dataclass
class DataConfig:
    dataset: str = "data/export/dataset"
    """a `datasets.save_to_disk` dir from `editkit curate export`"""
    resolution: Annotated[list[int], Range(gt=0, le=8192)] = field(default_factory=lambda: [512, 512])
    """[height, width] in pixels the training images are resized to"""
    eval_size: Annotated[int, Range(ge=0)] = 8
    """rows held out (deterministic, by seed) for evaluation"""
    source_column: str = columns.SOURCE_IMAGE
    """dataset column holding the source image"""
    instruction_columns: list[str] = field(default_factory=lambda: list(columns.INSTRUCTION_COLUMNS))
    """instruction columns, first non-empty one wins (refined before raw)"""
    mask_column: str = columns.MASK
    """COCO RLE of the pixels that SHOULD change"""
    edit_type_column: str = columns.EDIT_TYPE
    """dataset column holding the edit type (editkit.taxonomy name)"""
    target_column: str | None = columns.EDITED_IMAGE
    """ground-truth edited image (optional; rewards that need it say so)"""
    phrases_column: str | None = columns.TARGET_PHRASES
    """the edit's target phrases (optional; attention reward)"""
    center_crop: bool = False
    """crop to the centred square before resizing (CoCoEdit), else stretch to resolution"""
    resample: Literal["bicubic", "lanczos"] = "bicubic"
    """image resize filter: "bicubic" | "lanczos" (CoCoEdit); masks always nearest"""


@dataclass
class SamplerConfig:
    num_steps: Annotated[int, Range(ge=1)] = 10
    """denoising steps per rollout"""
    sde: Literal["flow_sde", "cps"] = "flow_sde"
    """"flow_sde" | "cps" (GRPO); NFT samples with the deterministic ODE"""
    noise_level: Annotated[float, Range(ge=0)] = 0.7
    """η of the SDE: how much noise each SDE step injects"""
    sde_window: Annotated[list[int], Range(ge=0)] = field(default_factory=lambda: [0, 10])
    """[start, end) step indices run as SDE (within num_steps)"""
    train_steps: Annotated[int, Range(ge=0)] = 0
    """how many of the window's steps to train on per iteration (0 = all; else seeded subset)"""
    region_noise: bool = False
    """RC-GRPO: a group shares the initial noise outside the edit mask (GRPO and NFT)"""
    solver: Literal["euler", "dpm2"] = "euler"
    """NFT rollout ODE solver: "euler" | "dpm2" (CoCoEdit's deterministic multistep DPM-Solver)"""
    nft_sde: bool = False
    """NFT rollouts with solver euler: run the sde_window's steps as the Flow-SDE at noise_level instead of the ODE. NFT
    needs no log-probs, so any sampler works; the extra noise gives a group diverse samples when the model maps every
    initial noise to nearly the same image. CoCoEdit: false (deterministic rollouts)."""
    region_sde: bool = False
    """with nft_sde: the SDE steps inject noise only on the edit-region tokens, the background tokens take the ODE
    step, so the rollouts NFT regresses onto (and the regularizer anchors to) keep the deterministic background"""


@dataclass
class RewardConfig:
    weights: dict[str, float] = field(default_factory=lambda: {"pixel_consistency": 1.0})
    """reward name -> weight in the summed reward (names of train.rewards.REWARDS)"""
    options: dict[str, dict[str, Any]] = field(default_factory=dict)
    """reward name -> keyword options of its factory (checked against its signature)"""
    overlap: bool = True
    """score each rollout micro-batch on a background thread while the next one rolls out (hides an HTTP judge's
    latency; same values, same order); false: score the whole batch after the rollout"""


@dataclass
class ObjectiveConfig:
    name: str = "nft"
    """the policy objective: "grpo" or "nft" (a key of train.trainers.TRAINERS)"""
    grpo: GRPOConfig = field(default_factory=GRPOConfig)
    """GRPO's ratio clip and KL weight (objective grpo)"""
    nft: NFTConfig = field(default_factory=NFTConfig)
    """DiffusionNFT's settings (objective nft)"""
    regularizer: RegularizerConfig = field(default_factory=RegularizerConfig)
    """the region regularizer added to the NFT loss"""


@dataclass
class TrainLoopConfig:
    max_steps: Annotated[int, Range(ge=1)] = 100
    """training iterations (sample -> score -> advantages -> optimise); at least 1"""
    groups_per_step: Annotated[int, Range(ge=1)] = 4
    """prompts per iteration, over all processes"""
    group_size: Annotated[int, Range(ge=2)] = 8
    """samples per prompt (at least 2: advantages compare them)"""
    micro_batch_size: Annotated[int, Range(ge=1)] = 2
    """rollout AND training batch (same size keeps the first ratio exactly 1)"""
    seed: Annotated[int, Range(ge=0)] = 0
    """seed of the prompt order, initial noise and LoRA init"""
    mixed_precision: Literal["auto", "no", "bf16", "fp16"] = "auto"
    """"auto" = bf16 on GPU and no on CPU; or "no", "bf16", "fp16\""""
    parallelism: str = "ddp"
    """"ddp" (a full model per process) | "fsdp2" (the transformer sharded over processes)"""
    fsdp: FSDPConfig = field(default_factory=FSDPConfig)
    """FSDP2 sharding options, used with parallelism fsdp2"""
    reuse_rollout_graph: Literal["auto", "on", "off"] = "auto"
    """GRPO: run the rollout's forwards of the trained SDE steps with gradients and back-propagate the loss through them
    instead of recomputing those forwards in the update (the same gradients, one forward less per trained step;
    activations are held from the rollout until the update). Needs an on-policy update (one optimizer update per
    iteration), one process and lora.dropout 0. "auto" = on when those hold, keeping graphs while the measured
    activations fit reuse_rollout_graph_budget_gib (the rest are recomputed); "on" = always (an error where it cannot
    apply), no budget; "off" = recompute. NFT ignores it"""
    reuse_rollout_graph_budget_gib: Annotated[float, Range(ge=0)] = 0.0
    """memory for the kept rollout activations with reuse_rollout_graph auto, in GiB (0 = half of the device's free
    memory when sampling starts)"""
    compile: bool = False
    """compile the transformer's repeated blocks with torch.compile (regional compilation: each block type is
    compiled once, in place, so checkpoints keep their keys). The first steps pay the compile time (about a minute
    for the tiny test models on 2 CPU cores, minutes at full size); later steps fuse the blocks' element-wise work.
    Gradients equal eager mode's to float rounding. Needs a C++ compiler on CPU"""


@dataclass
class EvalConfig:
    every: Annotated[int, Range(ge=0)] = 10
    """iterations between evaluations (0 = never; always at the end if > 0)"""
    num_samples: Annotated[int, Range(ge=1)] = 8
    """held-out rows evaluated"""
    seed: Annotated[int, Range(ge=0)] = 1234
    """fixed noise seed of the held-out evaluation"""


@dataclass
class TrainConfig:
    output_dir: str = "runs/train"
    """where checkpoints, the final LoRA, logs and plots are written"""
    model: ModelConfig = field(default_factory=ModelConfig)
    """the base editing model and how it is run"""
    lora: LoraConfig = field(default_factory=LoraConfig)
    """the LoRA adapter that is trained"""
    data: DataConfig = field(default_factory=DataConfig)
    """the curated dataset and how its rows become training prompts"""
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    """how rollouts are sampled (steps, SDE, window)"""
    rewards: RewardConfig = field(default_factory=RewardConfig)
    """which rewards score the rollouts and with what weights"""
    advantages: AdvantageConfig = field(default_factory=AdvantageConfig)
    """how rewards become advantages within a group"""
    region_advantages: RegionAdvantageConfig = field(default_factory=RegionAdvantageConfig)
    """Edit-GRPO: per-token advantages inside and outside the edit mask"""
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    """the policy objective (GRPO or NFT) and its regularizer"""
    optim: OptimConfig = field(default_factory=OptimConfig)
    """the AdamW optimizer of the LoRA"""
    train: TrainLoopConfig = field(default_factory=TrainLoopConfig)
    """the training loop: steps, group sizes, precision, parallelism"""
    eval: EvalConfig = field(default_factory=EvalConfig)
    """the held-out evaluation during training"""
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    """how often checkpoints are written and how many are kept"""
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    """where training metrics are logged"""

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
