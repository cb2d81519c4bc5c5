"""An edit-quality reward that knows nothing about the background: the stand-in for the MLLM judge in the ablation.

``clip(masked PSNR(edited, ground-truth target; edit region) / 40, 0, 1)``: how close the edited image is to the
dataset's ground-truth edited image INSIDE the edit mask only (:func:`editkit.metrics.masked_psnr`). Whatever the
model does to the other pixels cannot change it, exactly like a judge that only checks the instruction was
followed. It needs the ground truth (``RewardInputs.targets``, from ``data.target_column``); an empty edit mask has
nothing to measure: NaN (masked out and counted by the advantages).
"""
from __future__ import annotations

import torch

from editkit.needs import declare_needs
from train.rewards import RewardInputs, register_reward


@register_reward("edit_region")
@declare_needs("mask", "target_image")
def edit_region(psnr_scale_db: float = 40.0):
    def reward(inputs: RewardInputs) -> torch.Tensor:
        from editkit.metrics import masked_psnr

        if inputs.targets is None:
            raise ValueError("the edit_region reward needs the ground-truth edited images (RewardInputs.targets): "
                             "the dataset has no target column, or data.target_column is unset / names a missing "
                             "column")
        if inputs.targets.shape != inputs.images.shape:
            raise ValueError(f"edit_region: targets {tuple(inputs.targets.shape)} and images "
                             f"{tuple(inputs.images.shape)} differ in shape")
        region = inputs.edit_masks.bool()
        # float64 selects the metrics' float64 path: run-to-run identical rewards (exact resume)
        psnr = torch.as_tensor(masked_psnr(inputs.images.double().clamp(0, 1), inputs.targets.double().clamp(0, 1),
                                           region), dtype=torch.float64).reshape(-1)
        value = (psnr / psnr_scale_db).clamp(0, 1)  # identical region: +inf dB -> 1
        empty = region.flatten(1).sum(1) == 0
        return torch.where(empty, torch.full_like(value, float("nan")), value)

    return reward
