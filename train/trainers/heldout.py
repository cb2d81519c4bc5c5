"""The trainer's periodic evaluation on the held-out rows: deterministic ODE edits with fixed seeds, rewards and
the masked PSNR of the region that should not change (vs the source). Same seeds every time, so curves compare
checkpoints. With a reward declaring ``attention_maps`` (``attention_concentration``), each eval rollout is
recorded through ``trainer.attention`` too. :func:`ode_edits` is also the ablation's edit loop
(:mod:`train.experiment.edit_metrics`)."""
from __future__ import annotations

from contextlib import nullcontext
from functools import partial

import torch

from train.rewards import RewardInputs
from train.rollout.micro_batches import recorded_rollout
from train.rollout.reward_inputs import stacked_targets
from train.rollout.sampler import rollout


@torch.no_grad()
def ode_edits(adapter, examples, sigmas: torch.Tensor, seed: int, batch_size: int, autocast=nullcontext,
              attention=None) -> list[tuple[list, torch.Tensor, dict]]:
    """The model's deterministic ODE edits of ``examples``, noise seeded by ``seed + row`` (the same for every
    model and checkpoint), in chunks of ``batch_size``: ``[(chunk, images (b, 3, H, W) CPU float32, extras)]``.
    ``attention`` (an :class:`~train.rollout.micro_batches.AttentionWiring`) records each rollout's phrase attention."""
    height, width = examples[0].source.shape[-2:]
    was_training = adapter.transformer.training
    adapter.transformer.eval()
    results = []
    for start in range(0, len(examples), batch_size):
        chunk = examples[start : start + batch_size]
        cond = adapter.condition([e.prompt for e in chunk], torch.stack([e.source for e in chunk]))
        generators = [torch.Generator().manual_seed(seed + e.row) for e in chunk]
        noise = torch.cat([adapter.noise(1, height, width, g) for g in generators])
        run = partial(rollout, adapter, adapter.transformer, cond, noise, sigmas, sde="flow_sde", noise_level=0.0,
                      window=(0, 0), generators=generators, autocast=autocast)
        trajectory, extras = recorded_rollout(attention, [e.prompt for e in chunk],
                                              [list(e.phrases) for e in chunk], run, cond)
        results.append((chunk, adapter.decode(trajectory.final, height, width).float().cpu(), extras))
    adapter.transformer.train(was_training)
    return results


@torch.no_grad()
def heldout_metrics(trainer) -> dict[str, float]:
    """``eval_reward_mean`` and ``eval_bg_psnr`` of the trainer's current model on the first held-out rows."""
    from editkit.metrics import masked_psnr

    cfg = trainer.config
    examples = [e for e in map(trainer.checked_example, trainer.data.eval_rows[: cfg.eval.num_samples]) if e]
    if not examples:
        return {}
    totals, psnrs = [], []
    for chunk, images, extras in ode_edits(trainer.adapter, examples, trainer.sigmas, cfg.eval.seed,
                                           cfg.train.micro_batch_size, trainer.accelerator.autocast,
                                           trainer.attention):
        sources = torch.stack([e.source for e in chunk])
        masks = torch.stack([e.edit_mask for e in chunk])
        total, _ = trainer.rewards(RewardInputs(images, sources, masks, [e.prompt for e in chunk],
                                                [e.edit_type for e in chunk], targets=stacked_targets(chunk),
                                                phrases=[list(e.phrases) for e in chunk], extras=extras))
        totals.append(total)
        psnrs.append(torch.as_tensor(masked_psnr(images, sources, ~masks), dtype=torch.float64).reshape(-1))
    total, psnr = torch.cat(totals), torch.cat(psnrs)
    finite_total, finite_psnr = total[torch.isfinite(total)], psnr[torch.isfinite(psnr)]
    return {"eval_reward_mean": float(finite_total.mean()) if finite_total.numel() else float("nan"),
            "eval_bg_psnr": float(finite_psnr.mean()) if finite_psnr.numel() else float("nan")}
