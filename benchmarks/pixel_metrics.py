"""Pixel metrics of one benchmark output against its source, using the item's edit mask.

* ``psnr_bg`` / ``ssim_bg``: masked PSNR and SSIM over the NON-edited region only (content consistency), exactly as
  the curation's pair scores compute them (:func:`curate.scoring.pair.background_consistency`: the region's pixels
  only, not images multiplied by (1 - mask), which dilutes the error as the mask grows; PSNR capped at 100 dB so an
  untouched background stays a finite number in the means).
* ``edit_l1``: mean absolute difference (0-1 scale) inside the edit region: did the edit change anything there.
* ``mask_area``: the edit region's share of the image, reported beside the scores.

``convention="cocoedit"`` computes ``psnr_bg`` / ``ssim_bg`` as CoCoEdit's released scorer does
(:mod:`editkit.metrics_cocoedit`), to put numbers next to its paper's; the default is ours.

The output is resized to the source size first. A metric that cannot be meaningful is absent, with the reason in
``skipped``: no mask yet (``no_mask``), an output not pixel-aligned with the source (``not_pixel_aligned``: extraction),
or no unedited region at all (``no_unedited_region``: global edits such as style and tone).
"""
from __future__ import annotations

from typing import Any

import numpy as np


def resize_to(image: np.ndarray, height: int, width: int) -> np.ndarray:
    if image.shape[:2] == (height, width):
        return image
    from PIL import Image

    return np.asarray(Image.fromarray(image).resize((width, height), Image.Resampling.LANCZOS))


def pixel_metrics(source: np.ndarray, output: np.ndarray, mask: np.ndarray | None,
                  pixel_aligned: bool = True, convention: str = "standard") -> dict[str, Any]:
    """-> ``{"scores": {name: value}, "skipped": {name: reason}}`` for one item (``mask``: True = should change)."""
    from editkit.scores import BG_PSNR, BG_SSIM
    from curate.scoring.pair import background_consistency

    height, width = source.shape[:2]
    output = resize_to(output, height, width)
    scores: dict[str, float] = {}
    skipped: dict[str, str] = {}
    # cast before differencing: uint8 subtraction wraps around
    difference = np.abs(output.astype(np.float64) - source.astype(np.float64)) / 255.0
    scores["l1_all"] = float(difference.mean())
    if mask is None:
        skipped.update(psnr_bg="no_mask", ssim_bg="no_mask", edit_l1="no_mask", mask_area="no_mask")
        return {"scores": scores, "skipped": skipped}
    if mask.shape != (height, width):
        raise ValueError(f"mask is {mask.shape[1]}x{mask.shape[0]} but the source is {width}x{height}")
    scores["mask_area"] = float(mask.mean())
    if mask.any():
        scores["edit_l1"] = float(difference[mask].mean())
    else:
        skipped["edit_l1"] = "empty_mask"
    keep = ~mask
    if not pixel_aligned:
        skipped.update(psnr_bg="not_pixel_aligned", ssim_bg="not_pixel_aligned")
    elif not keep.any():
        skipped.update(psnr_bg="no_unedited_region", ssim_bg="no_unedited_region")
    elif convention == "standard":
        background = background_consistency(source, output, mask, rounded=False)  # full precision
        scores["psnr_bg"], scores["ssim_bg"] = background[BG_PSNR], background[BG_SSIM]
    else:
        from editkit.metrics import metric_pair

        psnr, ssim = metric_pair(convention)
        scores["psnr_bg"], scores["ssim_bg"] = float(psnr(source, output, keep)), float(ssim(source, output, keep))
    return {"scores": scores, "skipped": skipped}
