"""The GRPO trainer step with and without rollout-graph reuse (``train.reuse_rollout_graph``), and against a peer's
step (flow_grpo's FLUX.1-Kontext trainer, ``--peer PATH``), on the tiny FLUX.1-Kontext: G = 4 Flow-SDE rollouts over
4 steps with log-probs, decode, pixel reward, one LoRA r8 update over all 4 transitions.

    reuse on:  the rollout runs the trained steps' forwards with gradients; the update back-propagates through them
    reuse off: the rollout runs without gradients; the update recomputes those forwards
    peer:      flow_grpo's step, run from the user's clone: its ``pipeline_with_logprob`` (Kontext rollout with
               Flow-SDE log-probs and decode, no gradients), then per timestep its ``compute_log_prob`` (the
               transformer forward again, with gradients, and ``sde_step_with_logprob`` on the stored transition)
               and the clipped GRPO loss of its training loop, one AdamW update over the 4 transitions

All candidates take the same steps (the same batches, the same noise, the same LoRA initialisation and the same
pixel reward), interleaved round by round; the medians, their ratios and the medians of the per-round ratios (robust
to load bursts) are reported, with whether each step's rewards are equal and how far the gradients are apart.

    .venv/bin/python perf/peer_step.py                 # ours: reuse vs recompute
    .venv/bin/python perf/peer_step.py --heads 4 --head-dim 32
    .venv/bin/python perf/peer_step.py --peer ../flow_grpo   # also flow_grpo's step, imported from that clone
    .venv/bin/python perf/peer_step.py --peer ../flow_grpo --compile   # ours with train.compile
    .venv/bin/python perf/peer_step.py --smoke         # seconds: checks the script runs (ours only)

``--peer PATH`` is a local clone of flow_grpo with its Kontext trainer (``scripts/train_flux_kontext.py``,
``flow_grpo/diffusers_patch/flux_kontext_pipeline_with_logprob.py``, ``sd3_sde_with_logprob.py``). Its functions are
imported from that path (nothing of it is copied here); modules its script imports but this environment lacks and
the step does not use (wandb, ml_collections) are stubbed, and the output says which. Its script's training loop is
inline in ``main()``, so the loop around ``compute_log_prob`` (advantage clip, ratio, clipped loss, accelerate's
accumulation over the 4 timesteps: loss / 4, one clipped AdamW step) is restated here line for line. Its LoRA
targets (13 projections of every block) and its text length (128 T5 tokens) are used on every side. For the same
noise, the peer's SDE steps draw their noise (``randn_tensor`` in its ``sd3_sde_with_logprob`` module) from the same
per-sample generators our rollout uses, and its initial latents are ours. Gradient agreement: the LoRA gradients of
the first step (just before the optimizer step, after clipping) of ours and the peer's, as the largest per-tensor
relative difference ``|g_ours - g_peer| / |g_peer|`` (L2 norms), against a float32 tolerance of
8·eps·sqrt(n)·steps (n: the longest reduction, the 4 denoising steps fed back).

MixGRPO-style training on a window of SDE steps composes with the reuse: only the steps trained this iteration
(``sampler.train_steps`` of ``sampler.sde_window``, a seeded subset chosen before the rollout) run their rollout
forward with gradients and keep the graph; the window's other SDE steps and every ODE step stay gradient-free, so the
kept activations, and the saving, scale with the number of trained steps (one forward saved per trained step and
micro-batch, none for the rest).
"""
from __future__ import annotations

import argparse
import importlib.machinery
import importlib.util
import math
import sys
import tempfile
import time
import types
from pathlib import Path
from types import SimpleNamespace

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from perf import harness  # noqa: E402

# flow_grpo's Kontext trainer: what --peer PATH must contain
PEER_FILES = ("scripts/train_flux_kontext.py", "flow_grpo/diffusers_patch/flux_kontext_pipeline_with_logprob.py",
              "flow_grpo/diffusers_patch/sd3_sde_with_logprob.py")
# flow_grpo's LoRA targets (scripts/train_flux_kontext.py), used on every side of the comparison
PEER_LORA_TARGETS = ["attn.to_k", "attn.to_q", "attn.to_v", "attn.to_out.0", "attn.add_k_proj", "attn.add_q_proj",
                     "attn.add_v_proj", "attn.to_add_out", "ff.net.0.proj", "ff.net.2", "ff_context.net.0.proj",
                     "ff_context.net.2", "proj_mlp"]
PEER_TEXT_LENGTH = 128  # compute_text_embeddings(..., max_sequence_length=128) in its training loop
NOISE_LEVEL, GUIDANCE, STEPS, GROUP = 0.7, 2.5, 4, 4
CLIP_RANGE, ADV_CLIP = 1e-4, 5.0  # flow_grpo's defaults (config/base.py), ours alike


class PeerError(SystemExit):
    """A one-line reason why the peer cannot be run (exits with it)."""


def check_peer(path: Path) -> Path:
    """``path`` resolved, or :class:`PeerError` naming what is missing."""
    path = Path(path).expanduser().resolve()
    if not path.is_dir():
        raise PeerError(f"peer_step.py: --peer {path} is not a directory (expected a clone of flow_grpo)")
    missing = [name for name in PEER_FILES if not (path / name).is_file()]
    if missing:
        raise PeerError(f"peer_step.py: --peer {path} lacks flow_grpo's Kontext trainer files: {', '.join(missing)} "
                        "(clone a flow_grpo version with FLUX.1-Kontext support)")
    return path


def stub_missing(names: list[str]) -> list[str]:
    """Stub modules that are not installed (only those) and that the peer's step never calls; returns their names."""
    stubbed = []
    for name in names:
        try:
            present = importlib.util.find_spec(name.split(".")[0]) is not None
        except (ImportError, ValueError):
            present = False
        if present:
            continue
        module = types.ModuleType(name)
        module.__spec__ = importlib.machinery.ModuleSpec(name, None)
        if name == "ml_collections":
            module.config_flags = types.SimpleNamespace(DEFINE_config_file=lambda *args, **kwargs: None)
            sys.modules["ml_collections.config_flags"] = module.config_flags
        sys.modules[name] = module
        stubbed.append(name)
    return stubbed


def load_peer(path: Path) -> SimpleNamespace:
    """Import flow_grpo's Kontext functions from the clone at ``path``."""
    path = check_peer(path)
    import accelerate  # noqa: F401  (imported before the stubs: their availability checks see the real picture)
    import diffusers  # noqa: F401
    import peft  # noqa: F401

    stubbed = stub_missing(["wandb", "ml_collections"])
    sys.path.insert(0, str(path))
    try:
        from flow_grpo.diffusers_patch import flux_kontext_pipeline_with_logprob as pipeline_module
        from flow_grpo.diffusers_patch import sd3_sde_with_logprob as sde_module
        from flow_grpo.stat_tracking import PerPromptStatTracker

        spec = importlib.util.spec_from_file_location("flow_grpo_train_flux_kontext",
                                                      path / "scripts" / "train_flux_kontext.py")
        script = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(script)
    except ImportError as error:
        raise PeerError(f"peer_step.py: cannot import flow_grpo's Kontext trainer from {path}: {error}") from error
    finally:
        sys.path.remove(str(path))
    return SimpleNamespace(path=path, script=script, pipeline_module=pipeline_module, sde_module=sde_module,
                           stat_tracker=PerPromptStatTracker, stubbed=stubbed)


class DDPLike(torch.nn.Module):
    """What flow_grpo's ``compute_log_prob`` expects of its transformer (``.module``, as DDP wraps it under
    ``accelerate launch``); on one process DDP's forward is the module's."""

    def __init__(self, module):
        super().__init__()
        self.module = module

    def forward(self, *args, **kwargs):
        return self.module(*args, **kwargs)


class PeerStep:
    """flow_grpo's step (scripts/train_flux_kontext.py's sampling + training loop, one epoch of one batch) on the
    tiny Kontext, with our trainer's LoRA initialisation, batch, noise and pixel reward."""

    def __init__(self, peer: SimpleNamespace, model: Path, ours, resolution: int):
        from diffusers import FluxKontextPipeline
        from peft import LoraConfig, get_peft_model

        self.peer, self.ours, self.resolution = peer, ours, resolution
        pipeline = FluxKontextPipeline.from_pretrained(str(model), low_cpu_mem_usage=False)
        for part in (pipeline.vae, pipeline.text_encoder, pipeline.text_encoder_2):
            part.requires_grad_(False)
        pipeline.transformer.requires_grad_(False)
        pipeline.set_progress_bar_config(disable=True)
        lora = ours.config.lora
        pipeline.transformer = get_peft_model(pipeline.transformer, LoraConfig(
            r=lora.rank, lora_alpha=lora.alpha, init_lora_weights="gaussian", target_modules=PEER_LORA_TARGETS))
        self.copy_lora(ours.adapter.transformer, pipeline.transformer)
        self.pipeline, self.transformer = pipeline, DDPLike(pipeline.transformer)
        self.params = [p for p in pipeline.transformer.parameters() if p.requires_grad]
        optim = ours.config.optim
        self.optimizer = torch.optim.AdamW(self.params, lr=optim.learning_rate, betas=tuple(optim.betas),
                                           weight_decay=optim.weight_decay)  # eps: both default
        self.max_grad_norm = optim.max_grad_norm
        self.config = SimpleNamespace(sample=SimpleNamespace(guidance_scale=GUIDANCE, noise_level=NOISE_LEVEL))
        self.generators: list[torch.Generator] = []
        self.grads: dict[str, torch.Tensor] | None = None
        peer.sde_module.randn_tensor = self.randn_tensor  # its SDE noise from our per-sample generators

    @staticmethod
    def copy_lora(source: torch.nn.Module, target: torch.nn.Module) -> None:
        ours = {name: p for name, p in source.named_parameters() if "lora_" in name}
        theirs = {name: p for name, p in target.named_parameters() if "lora_" in name}
        if len(ours) != len(theirs):
            raise RuntimeError(f"LoRA layouts differ: {len(ours)} tensors here, {len(theirs)} in the peer's model")
        with torch.no_grad():
            for name, parameter in theirs.items():
                parameter.copy_(ours[name.removeprefix("base_model.model.")])

    def randn_tensor(self, shape, generator=None, device=None, dtype=None, layout=None):
        from train.rollout.sampler import per_sample_normal

        return per_sample_normal(tuple(shape[1:]), self.generators).to(device=device, dtype=dtype)

    def step(self, batch, step: int) -> dict[str, float]:
        from PIL import Image

        from train.rollout.reward_inputs import micro_batch_inputs

        script, size = self.peer.script, self.resolution
        pipeline, transformer = self.pipeline, self.transformer
        noise, self.generators = self.ours.initial_noise(batch.seeds)  # the same noise as our rollout's
        prompts = batch.prompts
        ref_images = [Image.fromarray((s.permute(1, 2, 0).numpy() * 255).round().astype("uint8"))
                      for s in batch.sources]
        # ---- sampling (its loop: text embeddings, pipeline_with_logprob, stack, timesteps)
        pipeline.transformer.eval()
        ref_images = [image.resize((size, size)) for image in ref_images]
        prompt_embeds, pooled_prompt_embeds = script.compute_text_embeddings(
            prompts, [pipeline.text_encoder, pipeline.text_encoder_2], [pipeline.tokenizer, pipeline.tokenizer_2],
            max_sequence_length=PEER_TEXT_LENGTH, device="cpu")
        with torch.no_grad():
            images, latents, latent_ids, text_ids, log_probs, image_latents = script.pipeline_with_logprob(
                pipeline, image=ref_images, prompt_embeds=prompt_embeds, pooled_prompt_embeds=pooled_prompt_embeds,
                num_inference_steps=STEPS, guidance_scale=GUIDANCE, output_type="pt", height=size, width=size,
                max_area=size * size, noise_level=NOISE_LEVEL, latents=noise)
        latents = torch.stack(latents, dim=1)
        log_probs = torch.stack(log_probs, dim=1)
        timesteps = pipeline.scheduler.timesteps.repeat(len(prompts), 1)
        # ---- the same pixel reward as ours, on its decoded images
        total, _ = self.ours.rewards(micro_batch_inputs(batch, slice(None), images.float().cpu(), {}))
        rewards = total.to(torch.float32).unsqueeze(1).repeat(1, STEPS)
        advantages = torch.as_tensor(self.peer.stat_tracker(False).update(prompts, rewards.numpy()))
        sample = {"prompt_embeds": prompt_embeds, "pooled_prompt_embeds": pooled_prompt_embeds,
                  "latent_ids": latent_ids.unsqueeze(0).repeat(len(prompts), 1, 1), "image_latents": image_latents,
                  "text_ids": text_ids.unsqueeze(0).repeat(len(prompts), 1, 1), "timesteps": timesteps,
                  "latents": latents[:, :-1], "next_latents": latents[:, 1:], "log_probs": log_probs,
                  "advantages": advantages}
        mask = sample["advantages"].abs().sum(dim=1) != 0
        sample = {k: v[mask] for k, v in sample.items()}
        perm = torch.randperm(int(mask.sum()))
        sample = {k: v[perm] for k, v in sample.items()}
        # ---- training (its loop over the timesteps; accelerate's accumulation: loss / 4, update at the last)
        pipeline.transformer.train()
        info: dict[str, list] = {"loss": [], "approx_kl": [], "clipfrac": []}
        for j in range(STEPS):
            _, log_prob, _, _ = script.compute_log_prob(transformer, pipeline, sample, j, self.config)
            adv = torch.clamp(sample["advantages"][:, j], -ADV_CLIP, ADV_CLIP)
            ratio = torch.exp(log_prob - sample["log_probs"][:, j])
            unclipped_loss = -adv * ratio
            clipped_loss = -adv * torch.clamp(ratio, 1.0 - CLIP_RANGE, 1.0 + CLIP_RANGE)
            loss = torch.mean(torch.maximum(unclipped_loss, clipped_loss))
            info["approx_kl"].append(0.5 * torch.mean((log_prob - sample["log_probs"][:, j]) ** 2))
            info["clipfrac"].append(torch.mean((torch.abs(ratio - 1.0) > CLIP_RANGE).float()))
            info["loss"].append(loss)
            (loss / STEPS).backward()
        torch.nn.utils.clip_grad_norm_(self.params, self.max_grad_norm)
        if self.grads is None:
            self.grads = lora_grads(pipeline.transformer, "base_model.model.")
        self.optimizer.step()
        self.optimizer.zero_grad()
        return {"reward_mean": float(total.mean()), "loss": float(torch.stack(info["loss"]).detach().mean())}


def lora_grads(module: torch.nn.Module, prefix: str = "") -> dict[str, torch.Tensor]:
    return {name.removeprefix(prefix): p.grad.detach().clone() for name, p in module.named_parameters()
            if p.requires_grad and p.grad is not None}


def record_first_grads(trainer) -> dict:
    """Wrap ``trainer``'s optimizer step to keep the LoRA gradients of its first update (after clipping)."""
    kept: dict = {}
    optimizer, original = trainer.optimizer, trainer.optimizer.step

    def step(*args, **kwargs):
        if not kept:
            kept.update(lora_grads(trainer.adapter.transformer))
        return original(*args, **kwargs)

    optimizer.step = step
    return kept


def record_batches(trainer) -> list:
    """Wrap ``trainer.make_batch`` to keep each step's batch (the peer takes the same one)."""
    batches, original = [], trainer.make_batch

    def make_batch(step):
        batches.append(original(step))
        return batches[-1]

    trainer.make_batch = make_batch
    return batches


def grad_agreement(ours: dict, theirs: dict) -> dict:
    """Largest per-tensor relative L2 difference of two gradient sets, and its float32 tolerance."""
    if set(ours) != set(theirs):
        raise RuntimeError(f"gradient sets differ: {sorted(set(ours) ^ set(theirs))[:4]}")
    worst = max(float((ours[k] - theirs[k]).norm() / theirs[k].norm().clamp_min(1e-30)) for k in theirs)
    return {"lora_grad_max_rel_diff": worst, "tensors": len(theirs)}


def finite_reward_rows(built: Path, directory: Path) -> Path:
    """The built dataset without its whole-image-mask row (the pixel reward is undefined there, NaN, which our
    trainer masks out but flow_grpo's loop, written for rewards that are always finite, would train on)."""
    import datasets

    rows = datasets.load_from_disk(str(built))
    rows.select(range(len(rows) - 1)).save_to_disk(str(directory))
    return directory


def build_trainer(workdir: Path, model: Path, dataset: Path, reuse: str, args):
    from train.config import load_config
    from train.trainers import TRAINERS

    targets = "[" + ", ".join(PEER_LORA_TARGETS) + "]"
    config = load_config(REPO / "train" / "configs" / "tiny_kontext.yaml", [
        f"model.path={model}", f"data.dataset={dataset}", f"output_dir={workdir / ('out-' + reuse)}",
        f"data.resolution=[{args.resolution}, {args.resolution}]", "objective.name=grpo",
        "objective.regularizer.enabled=false", f"lora.rank={args.rank}", f"lora.alpha={args.rank}",
        f"lora.target_modules={targets}", f"model.max_sequence_length={PEER_TEXT_LENGTH}",
        f"model.guidance_scale={GUIDANCE}", f"sampler.noise_level={NOISE_LEVEL}",
        f"objective.grpo.clip_range={CLIP_RANGE}", f"advantages.clip={ADV_CLIP}",
        f"sampler.num_steps={STEPS}", f"sampler.sde_window=[0, {STEPS}]", "sampler.train_steps=0",
        "train.groups_per_step=1", f"train.group_size={GROUP}", f"train.micro_batch_size={GROUP}", "train.seed=0",
        f"train.reuse_rollout_graph={reuse}", f"train.compile={str(args.compile).lower()}",
        "optim.gradient_accumulation=0", "logging.progress=false",
        "logging.tensorboard=false", "eval.every=0", "checkpoint.every=0", "rewards.overlap=false"])
    return TRAINERS.get("grpo")(config)


def same(a: float, b: float) -> bool:
    """Bit-equal, NaN equal to NaN (a step whose rewards are all non-finite logs NaN means on both sides)."""
    return a == b or (math.isnan(a) and math.isnan(b))


def grad_tolerance(resolution: int, heads: int, head_dim: int) -> float:
    """8·eps(float32)·sqrt(n)·steps, n the longest reduction: the attention over all tokens times the width."""
    tokens = 2 * (resolution // 2) ** 2 + PEER_TEXT_LENGTH
    return 8 * torch.finfo(torch.float32).eps * math.sqrt(tokens * heads * head_dim) * STEPS


def tiny_model_and_rows(workdir: Path, args) -> tuple[Path, Path]:
    """The tiny Kontext (2+2 blocks, ``args.heads`` x ``args.head_dim``) and 8 exported rows at
    ``args.resolution``, built into ``workdir`` (also perf/nft_step.py's)."""
    sys.path.insert(0, str(REPO / "tests" / "train"))  # the test-suite's exported-dataset builder
    from conftest import build_edit_dataset

    from train.experiment.small_kontext import build_small_kontext

    model = build_small_kontext(workdir / "model", num_layers=2, num_single_layers=2,
                                num_attention_heads=args.heads, attention_head_dim=args.head_dim)
    dataset = finite_reward_rows(build_edit_dataset(workdir / "built", count=9, size=args.resolution,
                                                    corrupt=False), workdir / "dataset")
    return model, dataset


def run(args, peer: SimpleNamespace | None) -> dict:
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        model, dataset = tiny_model_and_rows(workdir, args)
        trainers = {mode: build_trainer(workdir, model, dataset, mode, args) for mode in ("on", "off")}
        logs: dict[str, list[dict]] = {mode: [] for mode in trainers}
        grads = {mode: record_first_grads(trainer) for mode, trainer in trainers.items()}
        batches = record_batches(trainers["on"])
        candidates = {}
        for mode in trainers:
            def step(mode=mode):
                logs[mode].append(trainers[mode].step(len(logs[mode]) + 1))
            candidates[mode] = step
        peer_step = None
        if peer is not None:
            peer_step = PeerStep(peer, model, trainers["on"], args.resolution)
            logs["peer"] = []

            def run_peer():  # after ours in each round: the batch our "on" trainer just took
                logs["peer"].append(peer_step.step(batches[len(logs["peer"])], len(logs["peer"]) + 1))
            candidates["peer"] = run_peer
        cpu: dict[str, list[float]] = {name: [] for name in candidates}

        def with_cpu(name, fn):  # the process's CPU seconds too: on shared cores less noisy than wall time
            def timed():
                began = time.process_time()
                fn()
                cpu[name].append(time.process_time() - began)
            return timed

        warmup = 0 if args.smoke else 1
        times = harness.interleaved({name: with_cpu(name, fn) for name, fn in candidates.items()},
                                    rounds=args.rounds, warmup=warmup)
        cpu = {name: values[warmup:] for name, values in cpu.items()}
        for trainer in trainers.values():
            trainer.close()
    on, off = harness.median(times["on"]), harness.median(times["off"])
    rewards_equal = all(same(a[k], b[k]) for a, b in zip(logs["on"], logs["off"]) for k in a if k.startswith("reward"))
    grad_diff = max(abs(a["grad_norm"] - b["grad_norm"]) / max(abs(b["grad_norm"]), 1e-30)
                    for a, b in zip(logs["on"], logs["off"]))
    result = {"model": f"tiny FLUX.1-Kontext (2+2 layers, {args.heads} heads x {args.head_dim}), "
                       f"LoRA r{args.rank} on flow_grpo's 13 targets",
              "smoke": bool(args.smoke), "resolution": args.resolution, "group_size": GROUP,
              "sampling_steps": STEPS, "trained_steps": STEPS, "text_tokens": PEER_TEXT_LENGTH,
              "rounds": args.rounds, "threads": args.threads, "compile": bool(args.compile),
              "reuse_median_s": on, "recompute_median_s": off, "reuse_over_recompute": on / off,
              "speedup": off / on,
              "paired_ratio_median": harness.median([a / b for a, b in zip(times["on"], times["off"])]),
              "reused_fraction": min(log["reused"] for log in logs["on"]),
              "rewards_equal": rewards_equal, "grad_norm_max_rel_diff": grad_diff,
              "reuse_recompute_lora_grad_max_rel_diff": grad_agreement(grads["on"], grads["off"])[
                  "lora_grad_max_rel_diff"],
              "reuse_cpu_median_s": harness.median(cpu["on"]), "recompute_cpu_median_s": harness.median(cpu["off"]),
              "cpu_speedup": harness.median(cpu["off"]) / harness.median(cpu["on"]),
              "reuse_s": times["on"], "recompute_s": times["off"], "reuse_cpu_s": cpu["on"],
              "recompute_cpu_s": cpu["off"], "peer": None}
    if peer is not None:
        theirs = harness.median(times["peer"])
        agreement = grad_agreement(grads["on"], peer_step.grads)
        tolerance = grad_tolerance(args.resolution, args.heads, args.head_dim)
        result["peer"] = {
            "name": "flow_grpo (scripts/train_flux_kontext.py: pipeline_with_logprob, compute_log_prob, "
                    "sde_step_with_logprob, its GRPO loop)",
            "stubbed_modules": peer.stubbed, "median_s": theirs, "peer_s": times["peer"],
            "ours_over_peer": on / theirs, "speedup_vs_peer": theirs / on,
            "paired_speedup_median": harness.median([b / a for a, b in zip(times["on"], times["peer"])]),
            "recompute_speedup_vs_peer": theirs / off, "cpu_median_s": harness.median(cpu["peer"]),
            "peer_cpu_s": cpu["peer"], "cpu_speedup_vs_peer": harness.median(cpu["peer"]) / harness.median(cpu["on"]),
            "paired_cpu_speedup_median": harness.median([b / a for a, b in zip(cpu["on"], cpu["peer"])]),
            "rewards_max_abs_diff": max(abs(a["reward_mean"] - b["reward_mean"])
                                        for a, b in zip(logs["peer"], logs["on"])),
            **agreement, "grad_tolerance": tolerance, "gradients_agree": agreement["lora_grad_max_rel_diff"] <= tolerance}
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--peer", type=Path, default=None,
                        help="a local clone of flow_grpo with its Kontext trainer: also time its step")
    parser.add_argument("--rounds", type=int, default=9, help="timed rounds (after one warm-up round)")
    parser.add_argument("--heads", type=int, default=2)
    parser.add_argument("--head-dim", type=int, default=16)
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--compile", action="store_true",
                        help="our trainer with train.compile (regional torch.compile; the warm-up round compiles)")
    harness.add_options(parser, "peer_step")
    args = parser.parse_args()
    peer = load_peer(args.peer) if args.peer is not None else None
    if peer is not None and peer.stubbed:
        print(f"peer: stubbed modules not installed here and unused by its step: {', '.join(peer.stubbed)}")
    if args.smoke:
        args.rounds, args.resolution = 1, 32
    provenance = harness.Provenance(args.smoke)
    result = run(args, peer)
    print(f"{'':<10} {'median s':>9}")
    print(f"{'reuse':<10} {result['reuse_median_s']:>9.3f}")
    print(f"{'recompute':<10} {result['recompute_median_s']:>9.3f}")
    if result["peer"]:
        print(f"{'peer':<10} {result['peer']['median_s']:>9.3f}")
    print(f"reuse / recompute = {result['reuse_over_recompute']:.3f} (per-round median "
          f"{result['paired_ratio_median']:.3f}); rewards equal: {result['rewards_equal']}; "
          f"grad norm max rel diff {result['grad_norm_max_rel_diff']:.2e}")
    if result["peer"]:
        p = result["peer"]
        print(f"peer / ours (reuse) = {p['speedup_vs_peer']:.3f}x (per-round median {p['paired_speedup_median']:.3f}x;"
              f" recompute {p['recompute_speedup_vs_peer']:.3f}x; CPU time {p['cpu_speedup_vs_peer']:.3f}x); "
              f"LoRA grads max rel diff "
              f"{p['lora_grad_max_rel_diff']:.2e} (tolerance {p['grad_tolerance']:.1e}): "
              f"{'agree' if p['gradients_agree'] else 'DIFFER'}")
    harness.write_result(harness.out_path(args, "peer_step"), result, provenance)


if __name__ == "__main__":
    main()
