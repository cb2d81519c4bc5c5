"""CoCoEdit's region regularizer: keep the background of good samples, force bad samples to change the edit region.

Masks live on the packed-token grid (one weight per latent token). The edit mask and the background mask are each
eroded (square element, ``radius`` tokens) so the uncertain band along the boundary, the *ring*, only counts with
``ring_weight`` in both terms. With ``x̂0±`` the clean-latent predictions of the NFT positive/negative branches and
``d_w(a, b) = Σ w·mean_c (a−b)² / Σ w``::

    L = r·λ_bg·relu(d_bg(x̂0+, x0) − τ_pos) + (1 − r)·λ_ed·relu(τ_neg − d_ed(x̂0−, x_src))

where ``r ∈ [0, 1]`` is the NFT optimality weight, ``x0`` the rollout result and ``x_src`` the source latents.

``grid`` says where the masks live. ``"latent"`` is CoCoEdit's: the unpacked latent grid (2·rows × 2·cols, 64×64 at
512 px), the mask sampled there by nearest neighbour, eroded there (so ``erode_radius: 2`` is 16 image pixels), and
the weights packed with the latents' 2×2 layout so ``d_w`` is a per-element weighted mean over the 16 latent channels
and latent pixels. ``"token"`` erodes on the packed-token grid (``erode_radius`` tokens = twice the latent pixels).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from typing import Annotated, Literal
from editkit.config_meta import Range


@dataclass
class RegularizerConfig:
    enabled: bool = False
    """only with the NFT objective (it needs the positive/negative branches)"""
    lambda_background: Annotated[float, Range(ge=0)] = 0.02
    """weight λ_bg of the background term (CoCoEdit Kontext 0.02; Qwen 0.8)"""
    lambda_edit: Annotated[float, Range(ge=0)] = 0.02
    """weight λ_ed of the edit-region term (CoCoEdit Kontext 0.02; Qwen 0.5)"""
    tau_positive: Annotated[float, Range(ge=0)] = 0.001
    """background distance tolerated before the positive branch is penalised"""
    tau_negative: Annotated[float, Range(ge=0)] = 0.03
    """edit-region distance the negative branch must exceed"""
    erode_radius: Annotated[int, Range(ge=0)] = 2
    """erosion of the edit mask, in latent tokens, that defines the boundary band"""
    ring_weight: Annotated[float, Range(ge=0)] = 0.2
    """weight of the boundary band in both terms"""
    grid: Literal["latent", "token"] = "token"
    """"latent": CoCoEdit's unpacked latent grid (per latent pixel); "token": packed tokens"""


def erode(mask: torch.Tensor, radius: int) -> torch.Tensor:
    """Binary erosion of (B, h, w) bool masks with a (2r+1)² square; outside the image does not erode."""
    if radius <= 0:
        return mask.clone()
    outside = (~mask).float().unsqueeze(1)
    grown = F.max_pool2d(outside, kernel_size=2 * radius + 1, stride=1, padding=radius)
    return grown.squeeze(1) < 0.5


def region_weights(edit_mask: torch.Tensor, radius: int, ring_weight: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(background weights, edit weights), each (B, h·w) float, from a (B, h, w) token-grid edit mask."""
    edit = edit_mask > 0.5 if edit_mask.dtype != torch.bool else edit_mask
    core_edit, core_background = erode(edit, radius), erode(~edit, radius)
    ring = (~core_edit & ~core_background).float()
    background = core_background.float() + ring_weight * ring
    edit_w = core_edit.float() + ring_weight * ring
    return background.flatten(1), edit_w.flatten(1)


def soft_erode(mask: torch.Tensor, radius: int) -> torch.Tensor:
    """Erosion of (B, 1, h, w) masks in [0, 1]: ``1 − maxpool(1 − m)``; max-pooling pads with −inf, so the image
    border does not erode."""
    if radius <= 0:
        return mask
    return (1.0 - F.max_pool2d(1.0 - mask, kernel_size=2 * radius + 1, stride=1, padding=radius)).clamp(0, 1)


def pack_2x2(grid: torch.Tensor) -> torch.Tensor:
    """(B, 1, 2R, 2C) latent-pixel weights -> (B, R·C, 4) in the 2×2 order of the packed channels (dy, dx)."""
    b, _, h, w = grid.shape
    return grid.reshape(b, h // 2, 2, w // 2, 2).permute(0, 1, 3, 2, 4).reshape(b, (h // 2) * (w // 2), 4)


def latent_region_weights(edit_masks: torch.Tensor, rows: int, cols: int, radius: int,
                          ring_weight: float) -> tuple[torch.Tensor, torch.Tensor]:
    """CoCoEdit's weights on the unpacked latent grid from (B, H, W) pixel edit masks: (background, edit), each
    (B, rows·cols, 4) per latent pixel, packed like the latents."""
    keep = (1.0 - edit_masks.float()).unsqueeze(1)  # CoCoEdit's polarity: 1 = background
    keep = F.interpolate(keep, size=(2 * rows, 2 * cols), mode="nearest")
    core_background, core_edit = soft_erode(keep, radius), soft_erode(1.0 - keep, radius)
    ring = (1.0 - (core_background + core_edit).clamp(0, 1)).clamp(0, 1)
    background = (core_background + ring_weight * ring).clamp(0, 1)
    edit = (core_edit + ring_weight * ring).clamp(0, 1)
    return pack_2x2(background), pack_2x2(edit)


def weighted_distance(a: torch.Tensor, b: torch.Tensor, weights: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Mask-weighted mean squared distance between packed latents (B, L, C) -> (B,), with token weights (B, L) or
    per-latent-pixel weights (B, L, 4) (then a per-element weighted mean, CoCoEdit's ``Σ W·Δ² / max(Σ W, 1e-6)``)."""
    squared = (a.float() - b.float()) ** 2
    if weights.ndim == 3:
        per_pixel = squared.reshape(*squared.shape[:2], -1, weights.shape[-1])  # (B, L, C/4, 4)
        channels = per_pixel.shape[2]
        numerator = (per_pixel * weights.unsqueeze(2)).sum(dim=(1, 2, 3))
        return numerator / (weights.sum(dim=(1, 2)) * channels).clamp_min(1e-6)
    per_token = squared.mean(dim=-1)
    return (per_token * weights).sum(dim=1) / weights.sum(dim=1).clamp_min(eps)


def region_regularizer(
    x0_positive: torch.Tensor,
    x0_negative: torch.Tensor,
    x0: torch.Tensor,
    x_source: torch.Tensor,
    optimality: torch.Tensor,
    background_weights: torch.Tensor,
    edit_weights: torch.Tensor,
    config: RegularizerConfig,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Per-sample regularizer (B,) and its parts (the distances, for logging)."""
    d_background = weighted_distance(x0_positive, x0.detach(), background_weights)
    d_edit = weighted_distance(x0_negative, x_source.detach(), edit_weights)
    positive = config.lambda_background * F.relu(d_background - config.tau_positive)
    negative = config.lambda_edit * F.relu(config.tau_negative - d_edit)
    loss = optimality * positive + (1 - optimality) * negative
    return loss, {"reg_d_background": d_background.detach(), "reg_d_edit": d_edit.detach()}
