"""Held-out edit quality of a model: deterministic ODE edits (fixed per-row noise), scored against the ground truth.

Per row: masked PSNR and SSIM of the NON-edited region vs the source (what should not change) and masked PSNR of the
edit region vs the ground-truth edited image, with the ``edit_region`` reward (``clip(PSNR / 40, 0, 1)``) from it.
The same rows and the same noise for every model, so numbers compare models, not luck.
"""
from __future__ import annotations

import math

import torch

METRICS = ("bg_psnr", "bg_ssim", "edit_psnr", "edit_reward")


def edit_images(adapter, examples, num_steps: int, seed: int, batch_size: int) -> torch.Tensor:
    """The model's edits of ``examples`` (B, 3, H, W) by the deterministic ODE, noise seeded by ``seed + row``
    (the trainer's held-out evaluation, :func:`train.trainers.heldout.ode_edits`)."""
    from train.trainers.heldout import ode_edits

    height, width = examples[0].source.shape[-2:]
    sigmas = adapter.sigmas(num_steps, height, width)
    return torch.cat([images for _, images, _ in ode_edits(adapter, examples, sigmas, seed, batch_size)])


def edit_metrics(images: torch.Tensor, examples) -> dict[str, list[float]]:
    """Per-row metrics of ``images`` (the edits of ``examples``)."""
    from editkit.metrics import masked_psnr, masked_ssim
    from train.rewards import RewardInputs, WeightedRewards

    sources = torch.stack([e.source for e in examples]).double()
    targets = torch.stack([e.target for e in examples]).double()
    masks = torch.stack([e.edit_mask for e in examples]).bool()
    images = images.double().clamp(0, 1)
    edit_reward = WeightedRewards({"edit_region": 1.0}).functions["edit_region"]  # the RL reward, one definition
    inputs = RewardInputs(images, sources, masks, [e.prompt for e in examples], [e.edit_type for e in examples],
                          targets=targets)
    return {"bg_psnr": masked_psnr(images, sources, ~masks).tolist(),
            "bg_ssim": masked_ssim(images, sources, ~masks).tolist(),
            "edit_psnr": masked_psnr(images, targets, masks).tolist(),
            "edit_reward": edit_reward(inputs).tolist()}


def summarize(per_row: dict[str, list[float]]) -> dict[str, float]:
    """Mean of each metric over the rows where it is defined (NaN: nothing to measure). A +inf PSNR (identical
    pixels) makes the mean +inf: an honest "perfect", not a number averaged away."""
    out = {}
    for name, values in per_row.items():
        defined = [v for v in values if not math.isnan(v)]
        out[name] = sum(defined) / len(defined) if defined else float("nan")
    return out


def evaluate_model(adapter, examples, num_steps: int, seed: int, batch_size: int = 8) -> dict[str, float]:
    """Mean held-out metrics of the adapter's current model (LoRA included if one is active)."""
    return summarize(edit_metrics(edit_images(adapter, examples, num_steps, seed, batch_size), examples))
