"""CoCoEdit's pixel-consistency reward: how untouched the region that should NOT change is.

``0.35 · masked SSIM + 0.65 · clip(masked PSNR / 40, 0, 1)`` between the edited image and the source, measured only
on the non-edited pixels (``~edit_mask``), with the masked metrics of :mod:`editkit.metrics`. An image whose mask
covers everything has no region to measure: its reward is NaN (masked out and counted by the advantages).
``convention: cocoedit`` measures PSNR/SSIM as CoCoEdit's released scorer does (:mod:`editkit.metrics_cocoedit`).
"""
from __future__ import annotations

import torch

from editkit.needs import declare_needs
from train.rewards import RewardInputs, register_reward


@register_reward("pixel_consistency")
@declare_needs("source_image", "mask")
def pixel_consistency(ssim_weight: float = 0.35, psnr_weight: float = 0.65, psnr_scale_db: float = 40.0,
                      convention: str = "standard"):
    from editkit.metrics import metric_pair

    masked_psnr, masked_ssim = metric_pair(convention)  # a bad convention fails when the reward is built

    def reward(inputs: RewardInputs) -> torch.Tensor:
        region = ~inputs.edit_masks.bool()
        # float64 inputs select the metrics' float64 path: run-to-run identical rewards (exact resume)
        images, sources = inputs.images.double().clamp(0, 1), inputs.sources.double().clamp(0, 1)
        psnr = torch.as_tensor(masked_psnr(images, sources, region), dtype=torch.float64).reshape(-1)
        ssim = torch.as_tensor(masked_ssim(images, sources, region), dtype=torch.float64).reshape(-1)
        value = ssim_weight * ssim + psnr_weight * (psnr / psnr_scale_db).clamp(0, 1)
        empty = region.flatten(1).sum(1) == 0
        return torch.where(empty, torch.full_like(value, float("nan")), value)

    return reward
