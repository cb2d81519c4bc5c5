"""The supervised stage of the miniature ablation: train a small FLUX.1-Kontext-architecture editor from scratch.

1. Data: the exported dataset at the miniature resolution, split once (:mod:`train.experiment.ablation_data`).
2. VAE: diffusers ``AutoencoderKL`` (``vae_channels`` levels: scale factor ``2**(levels-1)``) fitted for
   reconstruction (a random VAE does not reconstruct); its ``shift_factor``/``scaling_factor`` are then set from the
   latent statistics so the latents the transformer sees have zero mean and unit variance, as FLUX's do.
3. Transformer: diffusers ``FluxTransformer2DModel`` (dual + single stream blocks, tiny CLIP/T5 text encoders from
   :mod:`train.experiment.small_kontext`, kept frozen) trained by rectified flow matching, ``x_t = (1−t)·x0 + t·ε``, target
   ``v = ε − x0``, ``t ~ sigmoid(N(0, 1))``, with ``x0`` the target image's latents and the source image as the
   Kontext condition — through :class:`~train.adapters.flux_kontext.FluxKontextAdapter` (``condition``,
   ``velocity``, ``encode_images``), the code path the RL trainers use.

The result is a full pipeline directory (``save_pretrained``) that ``FluxKontextPipeline.from_pretrained`` and
``model.path`` load, plus ``pretrain.json`` (config hash, loss curves, held-out edit metrics, timings). A later
call with the same config reuses it.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from train.experiment.ablation_data import AblationDataConfig
from typing import Annotated
from editkit.config_meta import Range


@dataclass
class ArchitectureConfig:
    num_layers: Annotated[int, Range(ge=1)] = 2
    """dual-stream (MMDiT) blocks"""
    num_single_layers: Annotated[int, Range(ge=0)] = 2
    """single-stream blocks after the dual-stream ones"""
    num_attention_heads: Annotated[int, Range(ge=1)] = 4
    """attention heads per transformer block"""
    attention_head_dim: Annotated[int, Range(ge=1)] = 16
    """width of each attention head"""
    latent_channels: Annotated[int, Range(ge=1)] = 8
    """channels of the VAE latent"""
    vae_channels: Annotated[list[int], Range(ge=1)] = field(default_factory=lambda: [16, 32])
    """VAE channels, one per level: the scale factor is 2**(levels-1)"""
    text_hidden: Annotated[int, Range(ge=1)] = 32
    """width of the (frozen, random) tiny CLIP and T5 encoders"""


@dataclass
class StageConfig:
    steps: Annotated[int, Range(ge=1)] = 500
    """optimizer steps of this training stage"""
    batch_size: Annotated[int, Range(ge=1)] = 32
    """images per optimizer step"""
    learning_rate: Annotated[float, Range(gt=0, le=1)] = 0.001
    """AdamW learning rate of this stage"""


@dataclass
class PretrainConfig:
    output_dir: str = "runs/ablation/base"
    """where the base editor is written: model/ (the pipeline), data/ (splits), pretrain.json"""
    data: AblationDataConfig = field(default_factory=AblationDataConfig)
    """the miniature training data drawn from the curated dataset"""
    architecture: ArchitectureConfig = field(default_factory=ArchitectureConfig)
    """sizes of the miniature FLUX.1-Kontext-architecture model"""
    vae: StageConfig = field(default_factory=lambda: StageConfig(steps=400, learning_rate=0.002))
    """the VAE's training stage (steps, batch, learning rate)"""
    transformer: StageConfig = field(default_factory=lambda: StageConfig(steps=1500))
    """the transformer's flow-matching training stage (steps, batch, learning rate)"""
    vae_kl_weight: Annotated[float, Range(ge=0)] = 0.0001
    """keeps the decoder robust around the posterior mode it is fed"""
    edit_loss_weight: Annotated[float, Range(ge=1)] = 1.0
    """flow-matching loss weight of a latent token fully inside the edit mask (1 + (w − 1)·coverage; background 1): the
    edit region is a few % of the pixels, and a small model otherwise learns to copy the source long before it learns
    to edit"""
    guidance_scale: Annotated[float, Range(ge=0)] = 2.5
    """the distilled-guidance value trained with (and used by RL)"""
    max_sequence_length: Annotated[int, Range(gt=0)] = 80
    """T5 tokens; the tiny T5 is character-level, instructions run to ~60 chars"""
    eval_steps: Annotated[int, Range(ge=1)] = 8
    """ODE steps of the held-out evaluation"""
    eval_seed: Annotated[int, Range(ge=0)] = 1234
    """noise seed of the held-out evaluation"""
    seed: Annotated[int, Range(ge=0)] = 0
    """seed of the weights' init, batch order and noise"""
    cpu_threads: Annotated[int, Range(ge=0)] = 0
    """torch CPU threads (0 = torch's default); 1 is fastest on a shared, oversubscribed CPU"""
    progress: bool = True
    """show progress bars of the training stages"""


def load_pretrain_config(path: str | Path | None, overrides: list[str] | None = None) -> PretrainConfig:
    from editkit.config import load_file

    return load_file(PretrainConfig, path, list(overrides or []))


def config_hash(config: PretrainConfig) -> str:
    """What determines the model: everything but where it is written and whether a bar is shown."""
    values = dataclasses.asdict(config)
    for volatile in ("output_dir", "progress", "cpu_threads"):
        values.pop(volatile)
    return hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()[:16]


def vae_hash(config: PretrainConfig) -> str:
    """What determines the VAE alone (its data, shape, stage and seed): the transformer can change without it."""
    arch = config.architecture
    values = {"data": dataclasses.asdict(config.data), "vae_channels": arch.vae_channels,
              "latent_channels": arch.latent_channels, "vae": dataclasses.asdict(config.vae),
              "vae_kl_weight": config.vae_kl_weight, "seed": config.seed}
    return hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()[:16]


def device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def set_threads(count: int) -> None:
    if count > 0:
        torch.set_num_threads(count)


def model_config(config: PretrainConfig, path: Path):
    from train.config import ModelConfig

    return ModelConfig(path=str(path), guidance_scale=config.guidance_scale,
                       max_sequence_length=config.max_sequence_length)


def build_vae(arch: ArchitectureConfig, seed: int):
    """A random ``AutoencoderKL`` with one level per ``vae_channels`` entry (scale factor ``2**(levels-1)``)."""
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    levels = len(arch.vae_channels)
    return AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * levels,
                         up_block_types=("UpDecoderBlock2D",) * levels, block_out_channels=tuple(arch.vae_channels),
                         layers_per_block=1, latent_channels=arch.latent_channels, norm_num_groups=4,
                         use_quant_conv=False, use_post_quant_conv=False, shift_factor=0.0, scaling_factor=1.0)


def build_pipeline(config: PretrainConfig, scratch: Path):
    """Random-initialised FluxKontextPipeline: tiny text encoders + our transformer size + a multi-level VAE."""
    from diffusers import FluxKontextPipeline

    from train.experiment.small_kontext import build_small_kontext

    arch = config.architecture
    build_small_kontext(scratch, num_layers=arch.num_layers, num_single_layers=arch.num_single_layers,
                       attention_head_dim=arch.attention_head_dim, num_attention_heads=arch.num_attention_heads,
                       latent_channels=arch.latent_channels, text_hidden=arch.text_hidden, seed=config.seed)
    pipe = FluxKontextPipeline.from_pretrained(scratch)
    pipe = FluxKontextPipeline(**{**pipe.components, "vae": build_vae(arch, config.seed)})
    shutil.rmtree(scratch)
    return pipe


def fit_vae(vae, images: torch.Tensor, config: PretrainConfig) -> list[float]:
    """Reconstruction (+ a small KL) on ``images`` (N, 3, H, W) in [0, 1]; then latent statistics -> the factors."""
    from tqdm.auto import tqdm

    stage, dev = config.vae, device()
    vae.to(dev).train().requires_grad_(True)
    optimizer = torch.optim.Adam(vae.parameters(), lr=stage.learning_rate)
    generator = torch.Generator().manual_seed(config.seed)
    curve = []
    for _ in tqdm(range(stage.steps), desc="pretrain vae", disable=not config.progress):
        pick = torch.randint(0, images.shape[0], (min(stage.batch_size, images.shape[0]),), generator=generator)
        pixels = images[pick].to(dev) * 2 - 1
        posterior = vae.encode(pixels).latent_dist
        recon = vae.decode(posterior.sample(), return_dict=False)[0]
        kl = posterior.kl().mean() / posterior.mean[0].numel()
        loss = torch.nn.functional.mse_loss(recon, pixels) + config.vae_kl_weight * kl
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        curve.append(float(loss.detach()))
    vae.eval().requires_grad_(False)
    with torch.no_grad():
        latents = torch.cat([vae.encode(images[i : i + 64].to(dev) * 2 - 1).latent_dist.mode()
                             for i in range(0, images.shape[0], 64)])
    mean, std = float(latents.mean()), float(latents.std())
    vae.register_to_config(shift_factor=mean, scaling_factor=1.0 / max(std, 1e-6))
    return curve


def cached_vae(vae, images: torch.Tensor, config: PretrainConfig, directory: Path):
    """The fitted VAE and its loss curve: loaded from ``directory`` when its :func:`vae_hash` matches, else fitted
    (from ``vae``, freshly initialised) and saved there."""
    from diffusers import AutoencoderKL

    from editkit.store import write_json

    digest, report = vae_hash(config), directory / "vae.json"
    if report.exists() and json.loads(report.read_text()).get("vae_hash") == digest:
        print(f"reusing the VAE in {directory} (hash {digest})")
        vae = AutoencoderKL.from_pretrained(directory).to(device()).eval().requires_grad_(False)
        return vae, json.loads(report.read_text())["curve"]
    curve = fit_vae(vae, images, config)
    vae.save_pretrained(directory)
    write_json(report, {"vae_hash": digest, "curve": curve})
    return vae, curve


def token_loss_weights(adapter, examples, edit_weight: float) -> torch.Tensor:
    """(N, L) flow-matching weights on the packed-token grid: 1 + (edit_weight − 1) · the token's edit coverage."""
    height, width = examples[0].source.shape[-2:]
    rows, cols = adapter.token_grid(height, width)
    masks = torch.stack([e.edit_mask for e in examples]).float().unsqueeze(1)
    coverage = torch.nn.functional.adaptive_avg_pool2d(masks, (rows, cols)).flatten(1)
    return 1.0 + (edit_weight - 1.0) * coverage


def fit_transformer(adapter, examples, config: PretrainConfig) -> list[float]:
    """Rectified flow matching of the target latents given (instruction, source) through the adapter."""
    from tqdm.auto import tqdm

    from train.adapters.base import Conditioning

    stage = config.transformer
    chunks = [examples[i : i + 64] for i in range(0, len(examples), 64)]
    conds = [adapter.condition([e.prompt for e in c], torch.stack([e.source for e in c])) for c in chunks]
    cond = Conditioning({k: torch.cat([c.per_sample[k] for c in conds]) for k in conds[0].per_sample},
                        conds[0].shared)
    x0 = torch.cat([adapter.encode_images(torch.stack([e.target for e in c])) for c in chunks])
    weights = token_loss_weights(adapter, examples, config.edit_loss_weight).to(x0.device)
    model = adapter.transformer
    model.train().requires_grad_(True)
    optimizer = torch.optim.AdamW(model.parameters(), lr=stage.learning_rate, weight_decay=1e-4)
    warmup = max(1, stage.steps // 20)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / warmup))
    generator = torch.Generator().manual_seed(config.seed + 1)
    curve = []
    for _ in tqdm(range(stage.steps), desc="pretrain transformer", disable=not config.progress):
        pick = torch.randint(0, x0.shape[0], (min(stage.batch_size, x0.shape[0]),), generator=generator)
        clean = x0[pick]
        t = torch.sigmoid(torch.randn(clean.shape[0], generator=generator)).to(clean.device)
        eps = torch.randn(clean.shape, generator=generator).to(clean.device)
        x_t = (1 - t[:, None, None]) * clean + t[:, None, None] * eps
        v = adapter.velocity(model, x_t, t, cond.select(pick.to(clean.device)))
        per_token = ((v.float() - (eps - clean)) ** 2).mean(dim=-1)
        loss = (per_token * weights[pick]).sum() / weights[pick].sum()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        curve.append(float(loss.detach()))
    model.eval().requires_grad_(False)
    return curve


def load_examples(path: Path, resolution: int) -> list:
    from train.config import DataConfig
    from train.data import EditDataset

    data = EditDataset(DataConfig(dataset=str(path), resolution=[resolution, resolution], eval_size=0), seed=0)
    return [data.example(row) for row in data.train_rows]


def reference_metrics(adapter, examples) -> dict[str, dict[str, float]]:
    """What the metrics read for trivial editors: copying the source, the ground truth, the VAE's round trip of it."""
    from train.experiment.edit_metrics import edit_metrics, summarize

    targets = torch.stack([e.target for e in examples])
    height, width = targets.shape[-2:]
    round_trip = adapter.decode(adapter.encode_images(targets), height, width).cpu()
    return {name: summarize(edit_metrics(images, examples)) for name, images in
            (("copy_source", torch.stack([e.source for e in examples])), ("ground_truth", targets),
             ("vae_round_trip_of_ground_truth", round_trip))}


def pretrain(config: PretrainConfig) -> Path:
    """Train (or reuse, when ``pretrain.json`` has the same config hash) the base editor; returns ``output_dir``."""
    from editkit.store import write_json
    from train.experiment.ablation_data import prepare_splits
    from train.adapters.flux_kontext import FluxKontextAdapter
    from train.experiment.edit_metrics import evaluate_model

    out = Path(config.output_dir)
    digest = config_hash(config)
    report_path = out / "pretrain.json"
    if report_path.exists() and json.loads(report_path.read_text()).get("config_hash") == digest:
        print(f"reusing the base editor in {out} (config hash {digest})")
        return out
    began = time.perf_counter()
    set_threads(config.cpu_threads)
    torch.manual_seed(config.seed)
    splits = prepare_splits(config.data, out / "data")
    train_rows = load_examples(splits["train"], config.data.resolution)
    eval_split = "validation" if "validation" in splits else "heldout"  # the test rows stay unread when possible
    heldout_rows = load_examples(splits[eval_split], config.data.resolution)
    pipe = build_pipeline(config, out / "scratch")
    images = torch.stack([e.source for e in train_rows] + [e.target for e in train_rows])
    pipe.vae, vae_curve = cached_vae(pipe.vae, images, config, out / "vae")
    torch.manual_seed(config.seed + 2)  # the transformer stage starts from the same RNG state, VAE reused or not
    vae_seconds = time.perf_counter() - began
    pipe.save_pretrained(out / "model")
    adapter = FluxKontextAdapter(model_config(config, out / "model"), device(), torch.float32)
    transformer_curve = fit_transformer(adapter, train_rows, config)
    adapter.pipe.save_pretrained(out / "model")
    train_seconds = time.perf_counter() - began
    metrics = {"base_model": evaluate_model(adapter, heldout_rows, config.eval_steps, config.eval_seed),
               **reference_metrics(adapter, heldout_rows)}
    every = max(1, len(transformer_curve) // 200)
    write_json(report_path, {
        "config_hash": digest, "config": dataclasses.asdict(config),
        "rows": {"train": len(train_rows), eval_split: len(heldout_rows)}, "eval_split": eval_split,
        "seconds": {"vae": round(vae_seconds, 1), "total_training": round(train_seconds, 1),
                    "with_evaluation": round(time.perf_counter() - began, 1)},
        "heldout_metrics": metrics,
        "loss_curves": {"every": every, "vae": vae_curve[::every], "transformer": transformer_curve[::every]}})
    print(json.dumps(metrics, indent=1))
    return out
