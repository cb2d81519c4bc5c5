"""Periodic evaluation on the held-out rows: deterministic ODE edits with fixed seeds, rewards and the masked
PSNR of the region that should not change (vs the source). Same seeds every time, so curves compare checkpoints.
With the ``attention_concentration`` reward, each eval rollout is recorded through ``trainer.attention`` too."""
from __future__ import annotations

from functools import partial

import torch

from train.rewards import RewardInputs
from train.rollout import rollout
from train.trainers.base import stacked_targets


@torch.no_grad()
def evaluate(trainer) -> dict[str, float]:
    from curate.metrics import masked_psnr

    cfg = trainer.config
    examples = [e for e in map(trainer.checked_example, trainer.data.eval_rows[: cfg.eval.num_samples]) if e]
    if not examples:
        return {}
    adapter = trainer.adapter
    was_training = adapter.transformer.training
    adapter.transformer.eval()
    totals, psnrs = [], []
    for start in range(0, len(examples), cfg.train.micro_batch_size):
        chunk = examples[start : start + cfg.train.micro_batch_size]
        sources = torch.stack([e.source for e in chunk])
        masks = torch.stack([e.edit_mask for e in chunk])
        cond = adapter.condition([e.prompt for e in chunk], sources)
        generators = [torch.Generator().manual_seed(cfg.eval.seed + e.row) for e in chunk]
        noise = torch.cat([adapter.noise(1, trainer.height, trainer.width, g) for g in generators])
        prompts, phrases = [e.prompt for e in chunk], [list(e.phrases) for e in chunk]
        run = partial(rollout, adapter, adapter.transformer, cond, noise, trainer.sigmas, sde="flow_sde",
                      noise_level=0.0, window=(0, 0), generators=generators, autocast=trainer.accelerator.autocast)
        if trainer.attention is not None:  # the attention_concentration reward needs this rollout's phrase attention
            trajectory, extras = trainer.attention.record(prompts, phrases, run, cond=cond)
        else:
            trajectory, extras = run(), {}
        images = adapter.decode(trajectory.final, trainer.height, trainer.width).cpu()
        total, _ = trainer.rewards(RewardInputs(images, sources, masks, prompts, [e.edit_type for e in chunk],
                                                targets=stacked_targets(chunk), phrases=phrases, extras=extras))
        totals.append(total)
        psnrs.append(torch.as_tensor(masked_psnr(images, sources, ~masks), dtype=torch.float64).reshape(-1))
    adapter.transformer.train(was_training)
    total, psnr = torch.cat(totals), torch.cat(psnrs)
    finite_total, finite_psnr = total[torch.isfinite(total)], psnr[torch.isfinite(psnr)]
    return {"eval_reward_mean": float(finite_total.mean()) if finite_total.numel() else float("nan"),
            "eval_bg_psnr": float(finite_psnr.mean()) if finite_psnr.numel() else float("nan")}
