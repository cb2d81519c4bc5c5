"""Trainer loop overhead: how much time the trainer adds around the model's own forward/backward work.

    overhead = (trainer step time − raw time) / raw time          goal: ≤ 15 % on the tiny CPU model

*raw* is the same model work done in a bare loop on the same batch: the rollout's no-grad forwards, the VAE
decode, and the forward+backward(+optimizer step) of every trained (micro-batch, timestep) unit, with inputs
prepared beforehand. The trainer step adds data loading, prompt/condition encoding, rewards, advantages (gathered),
log-prob/loss math, logging scalars. Both are timed on the same warm process, interleaved; the overhead
uses the minimum over ``--steps`` repeats (on a shared machine other jobs only ever add time), medians beside it.

``--full`` instead builds the full-size FLUX.1-Kontext transformer config with random weights in bf16 + LoRA and
gradient checkpointing at 512 px (1024 target + 1024 condition tokens, 512 text tokens) and reports peak GPU memory
and seconds per sample for one GRPO group step (rollout + training on the SDE window). Needs a CUDA GPU.

    .venv/bin/python perf/train_overhead.py            # tiny model, CPU
    .venv/bin/python perf/train_overhead.py --full     # GPU
    .venv/bin/python perf/train_overhead.py --smoke    # seconds: checks the script runs (also with --full: toy dims)
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests" / "train"))  # the test-suite's exported-dataset builder

from perf import harness  # noqa: E402


def _tiny_trainer(workdir: Path, args):
    from conftest import build_edit_dataset

    from train.experiment.small_kontext import build_small_kontext
    from train.config import load_config
    from train.trainers import TRAINERS

    model = build_small_kontext(workdir / "model", num_layers=2, num_single_layers=2, attention_head_dim=32)
    dataset = build_edit_dataset(workdir / "dataset", count=12, size=args.resolution, corrupt=False)
    config = load_config(REPO / "train" / "configs" / "tiny_kontext.yaml", [
        f"model.path={model}", f"data.dataset={dataset}", f"output_dir={workdir / 'out'}",
        f"data.resolution=[{args.resolution}, {args.resolution}]", f"objective.name={args.objective}",
        f"objective.regularizer.enabled={'true' if args.objective == 'nft' else 'false'}",
        "train.groups_per_step=2", "train.group_size=4", "train.micro_batch_size=4", "logging.progress=false",
        "logging.tensorboard=false", "eval.every=0", "checkpoint.every=0", "optim.gradient_accumulation=0"])
    return TRAINERS.get(args.objective)(config)


def _trainer_step(trainer, step: int) -> float:
    from train.algorithms.advantages import gathered_advantages

    began = time.perf_counter()
    batch = trainer.make_batch(step)
    trainer.sample(batch, step)
    rewards, parts = trainer.score(batch)
    advantages = gathered_advantages(trainer.accelerator, rewards, batch.group_ids, trainer.config.advantages)
    stats = trainer.reduce_mean(trainer.optimize(batch, advantages, step))
    trainer.logger.log(step, {**advantages.stats, **stats})
    return time.perf_counter() - began, batch


def _raw_step(trainer, batch) -> float:
    """The same model calls on the same batch, inputs prepared outside the timed region."""
    adapter, model = trainer.adapter, trainer.model
    cond = batch.cond
    n = len(batch.seeds)
    x = torch.randn(n, *batch.samples.final.shape[1:])
    guidance = torch.full((n,), 2.5)
    shared = cond.shared
    sample_steps = len(trainer.sigmas) - 1
    trained = getattr(batch.samples, "steps", None) or trainer.trained_steps(sorted(batch.samples.states), 0)

    def forward(xs, mb):
        hidden = torch.cat([xs, cond.per_sample["image_tokens"][mb]], dim=1)
        return model(hidden_states=hidden, timestep=torch.full((hidden.shape[0],), 0.5), guidance=guidance[mb],
                     pooled_projections=cond.per_sample["pooled"][mb],
                     encoder_hidden_states=cond.per_sample["prompt_embeds"][mb], txt_ids=shared["text_ids"],
                     img_ids=shared["img_ids"], return_dict=False)[0][:, : xs.shape[1]]

    micro = trainer.micro_batches(n)
    began = time.perf_counter()
    with torch.no_grad():
        for _ in range(sample_steps):
            for mb in micro:
                forward(x[mb], mb)
        if trainer.name == "nft":  # the sampling policy's velocity at each trained step (and the reference's)
            for _ in trained:
                for mb in micro:
                    forward(x[mb], mb)
                    with adapter.reference():
                        forward(x[mb], mb)
        for mb in micro:
            adapter.decode(x[mb], trainer.height, trainer.width)
    for _ in trained:
        for mb in micro:
            forward(x[mb], mb).float().pow(2).mean().backward()
    trainer.optimizer.step()
    trainer.optimizer.zero_grad(set_to_none=True)
    return time.perf_counter() - began


def run_tiny(args) -> dict:
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = _tiny_trainer(Path(tmp), args)
        _trainer_step(trainer, 1)  # warm-up (lazy inits, allocator)
        trainer_times, raw_times = [], []
        for step in range(2, args.steps + 2):
            seconds, batch = _trainer_step(trainer, step)
            trainer_times.append(seconds)
            raw_times.append(_raw_step(trainer, batch))
    # min over interleaved repeats: the CPU box is shared, and other jobs only ever add time
    step_s, raw_s = min(trainer_times), min(raw_times)
    return {"model": "tiny Kontext (2+2 blocks, head 32)", "objective": args.objective, "device": "cpu",
            "threads": args.threads, "resolution": args.resolution, "samples_per_step": 8, "steps": args.steps,
            "trainer_step_s": step_s, "raw_step_s": raw_s, "overhead": (step_s - raw_s) / raw_s, "goal": 0.15,
            "trainer_step_median_s": statistics.median(trainer_times), "raw_step_median_s": statistics.median(raw_times)}


FLUX_KONTEXT_DEV = dict(patch_size=1, in_channels=64, num_layers=19, num_single_layers=38, attention_head_dim=128,
                        num_attention_heads=24, joint_attention_dim=4096, pooled_projection_dim=768,
                        guidance_embeds=True, axes_dims_rope=(16, 56, 56))


def run_full(args) -> dict:
    """One GRPO group step of the full-size transformer (random bf16 weights) on a CUDA GPU."""
    from diffusers import FluxTransformer2DModel
    from peft import LoraConfig

    from train.algorithms.grpo import grpo_loss
    from train.algorithms.sde import flow_sde_step

    import contextlib

    cuda = torch.cuda.is_available()
    if not cuda and not args.smoke:
        raise SystemExit("--full needs a CUDA GPU (none here); run it on a GPU machine (--smoke: tiny dims on CPU)")
    device, dtype = torch.device("cuda" if cuda else "cpu"), torch.bfloat16 if cuda else torch.float32
    config = dict(FLUX_KONTEXT_DEV)
    if args.smoke:  # same code path, toy dimensions: checks the script itself on a CPU box
        config.update(num_layers=1, num_single_layers=1, attention_head_dim=16, num_attention_heads=2,
                      joint_attention_dim=32, pooled_projection_dim=16, axes_dims_rope=(4, 6, 6))
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # build directly in bf16 on the GPU: no 48 GB fp32 copy in host memory
    try:
        with torch.device(device):
            model = FluxTransformer2DModel(**config)
    finally:
        torch.set_default_dtype(previous)
    model.requires_grad_(False)
    model.add_adapter(LoraConfig(r=32, lora_alpha=64, target_modules=["to_k", "to_q", "to_v", "to_out.0"]))
    for p in model.parameters():
        if p.requires_grad:
            p.data = p.data.float()
    model.enable_gradient_checkpointing()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    tokens = (args.full_resolution // 16) ** 2
    group, micro, steps, window = args.group_size, args.micro_batch_size, 10, (0, 3)
    text = torch.randn(micro, 512, config["joint_attention_dim"], device=device, dtype=dtype)
    pooled = torch.randn(micro, config["pooled_projection_dim"], device=device, dtype=dtype)
    cond_tokens = torch.randn(micro, tokens, 64, device=device, dtype=dtype)
    side = args.full_resolution // 16
    ids = torch.zeros(side, side, 3)
    ids[..., 1] += torch.arange(side)[:, None]
    ids[..., 2] += torch.arange(side)[None, :]
    ids = ids.reshape(-1, 3)
    cond_ids = ids.clone()
    cond_ids[:, 0] = 1
    img_ids = torch.cat([ids, cond_ids]).to(device, dtype)
    txt_ids = torch.zeros(512, 3, device=device, dtype=dtype)

    autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if cuda else contextlib.nullcontext

    def velocity(x, sigma):
        hidden = torch.cat([x.to(dtype), cond_tokens[: x.shape[0]]], dim=1)
        with autocast():
            out = model(hidden_states=hidden, timestep=torch.full((x.shape[0],), sigma, device=device, dtype=dtype),
                    guidance=torch.full((x.shape[0],), 2.5, device=device), pooled_projections=pooled[: x.shape[0]],
                        encoder_hidden_states=text[: x.shape[0]], txt_ids=txt_ids, img_ids=img_ids,
                        return_dict=False)[0]
        return out[:, : x.shape[1]]

    sigmas = torch.linspace(1, 0, steps + 1).tolist()
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    sync()
    began = time.perf_counter()
    for _ in range(0, group, micro):
        x = torch.randn(micro, tokens, 64, device=device)
        stored = []
        with torch.no_grad():
            for i in range(steps):
                v = velocity(x, sigmas[i])
                if window[0] <= i < window[1]:
                    out = flow_sde_step(x, v, sigmas[i], sigmas[i + 1], 0.7, sigma_max=sigmas[1])
                    stored.append((i, x, out.x_next, out.log_prob))
                    x = out.x_next
                else:
                    x = x + (sigmas[i + 1] - sigmas[i]) * v.float()
        for i, x_i, x_next, old in stored:
            v = velocity(x_i, sigmas[i])
            out = flow_sde_step(x_i, v, sigmas[i], sigmas[i + 1], 0.7, sigma_max=sigmas[1], prev_sample=x_next)
            ones = torch.ones(micro, device=device)
            loss, _ = grpo_loss(out.log_prob, old, ones, ones.bool(), 1e-4)
            loss.backward()
    optimizer.step()
    sync()
    seconds = time.perf_counter() - began
    return {"model": "FLUX.1-Kontext-dev transformer config, random bf16 weights, LoRA r32, grad checkpointing",
            "smoke": bool(args.smoke), "device": torch.cuda.get_device_name() if cuda else "cpu",
            "resolution": args.full_resolution, "group_size": group,
            "micro_batch_size": micro, "sampling_steps": steps, "trained_steps": window[1] - window[0],
            "peak_memory_gib": torch.cuda.max_memory_allocated() / 2**30 if cuda else float("nan"),
            "seconds_per_sample": seconds / group}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=5, help="timed iterations (after one warm-up)")
    parser.add_argument("--objective", choices=["grpo", "nft"], default="grpo")
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--full", action="store_true", help="full-size FLUX.1-Kontext transformer on a CUDA GPU")
    parser.add_argument("--full-resolution", type=int, default=512)
    parser.add_argument("--group-size", type=int, default=12)
    parser.add_argument("--micro-batch-size", type=int, default=2)
    harness.add_options(parser, "train_overhead")  # --smoke with --full: toy dimensions on CPU, same code path
    args = parser.parse_args()
    if args.smoke and not args.full:
        args.steps, args.resolution = 1, 32
    provenance = harness.Provenance(args.smoke)
    result = run_full(args) if args.full else run_tiny(args)
    name = ("train_overhead_full_smoke" if args.smoke else "train_overhead_full") if args.full \
        else f"train_overhead_{args.objective}"
    width = max(len(k) for k in result)
    print(f"{'metric':<{width}}  value")
    for key, value in result.items():
        print(f"{key:<{width}}  {value:.4f}" if isinstance(value, float) else f"{key:<{width}}  {value}")
    cuda = args.full and torch.cuda.is_available()
    harness.write_result(harness.out_path(args, name), result, provenance,
                         gpu=torch.cuda.get_device_name() if cuda else None)


if __name__ == "__main__":
    main()
