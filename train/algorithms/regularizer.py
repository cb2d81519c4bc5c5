"""CoCoEdit's region regularizer: keep the background of good samples, force bad samples to change the edit region.

Masks live on the packed-token grid (one weight per latent token). The edit mask and the background mask are each
eroded (square element, ``radius`` tokens) so the uncertain band along the boundary, the *ring*, only counts with
``ring_weight`` in both terms. With ``x̂0±`` the clean-latent predictions of the NFT positive/negative branches and
``d_w(a, b) = Σ w·mean_c (a−b)² / Σ w``::

    L = r·λ_bg·relu(d_bg(x̂0+, x0) − τ_pos) + (1 − r)·λ_ed·relu(τ_neg − d_ed(x̂0−, x_src))

where ``r ∈ [0, 1]`` is the NFT optimality weight, ``x0`` the rollout result and ``x_src`` the source latents.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class RegularizerConfig:
    enabled: bool = False  # only with the NFT objective (it needs the positive/negative branches)
    lambda_background: float = 0.02  # λ_bg (CoCoEdit Kontext 0.02; Qwen 0.8)
    lambda_edit: float = 0.02  # λ_ed (CoCoEdit Kontext 0.02; Qwen 0.5)
    tau_positive: float = 1e-3  # background distance tolerated before the positive branch is penalised
    tau_negative: float = 3e-2  # edit-region distance the negative branch must exceed
    erode_radius: int = 2  # in latent tokens
    ring_weight: float = 0.2  # weight of the boundary band in both terms


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


def weighted_distance(a: torch.Tensor, b: torch.Tensor, weights: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Mask-weighted mean squared distance between packed latents (B, L, C) with token weights (B, L) -> (B,)."""
    per_token = ((a.float() - b.float()) ** 2).mean(dim=-1)
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
