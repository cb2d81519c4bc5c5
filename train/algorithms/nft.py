"""DiffusionNFT: supervised flow matching on the model's own samples, weighted by how good they were.

On a rollout result ``x0`` with fresh noise, ``x_t = (1 − t)·x0 + t·ε``. The optimality weight is
``r = clamp(A / A_max / 2 + 0.5, 0, 1)``. With ``v_old`` the sampling policy's velocity (no grad)::

    v+ = β·v_θ + (1 − β)·v_old          v− = (1 + β)·v_old − β·v_θ
    x̂0(v) = x_t − t·v
    L = r·‖x̂0(v+) − x0‖² / w+ + (1 − r)·‖x̂0(v−) − x0‖² / w−   (+ ref_weight·‖v_θ − v_ref‖²)

``w±`` are the detached mean absolute errors of each branch (an adaptive loss scale); norms are means over
non-batch dims. Good samples pull the policy towards themselves, bad ones push it away, without log-probs.

``weighting`` says how the policy term is scaled before the reference term (and the region regularizer) are added:
``"cocoedit"`` multiplies it by ``A_max / β`` as CoCoEdit's training code does, so its λ and KL weights keep their
meaning; ``"unit"`` leaves it unscaled (this project's earlier convention, 5× stronger regularization at A_max = 5).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from typing import Annotated, Literal
from editkit.config_meta import Range


@dataclass
class NFTConfig:
    beta: Annotated[float, Range(gt=0)] = 1.0
    """mixing strength β of the implicit positive/negative policies"""
    adv_max: Annotated[float, Range(gt=0)] = 5.0
    """A_max in r = clamp(A/A_max/2 + 0.5, 0, 1); match the advantage clip"""
    ref_weight: Annotated[float, Range(ge=0)] = 0.0001
    """weight of ‖v_θ − v_ref‖² (0 = skip the reference forward)"""
    min_weight: Annotated[float, Range(gt=0)] = 1e-05
    """floor of the adaptive scales w±"""
    weighting: Literal["cocoedit", "unit"] = "unit"
    """"cocoedit": policy term × adv_max/β (CoCoEdit's total loss); "unit": unscaled"""
    old_decay_rate: Annotated[float, Range(ge=0)] = 0.0
    """the sampling ("old") policy lags the trained one: after iteration s, θ_old ← d·θ_old + (1 − d)·θ with d =
    min(old_decay_rate·s, old_decay_max) (CoCoEdit: 0.001); 0 = sample with the current weights"""
    old_decay_max: Annotated[float, Range(ge=0, lt=1)] = 0.0
    """upper bound of the lag factor d of the sampling policy (CoCoEdit: 0.5; 0 = no lag)"""
    fuse_old_forward: Literal["auto", "on", "off"] = "auto"
    """take v_old at each trained step from the update's own forward (detached) instead of a separate forward before
    the update: they are the same numbers when the sampling policy is the current one (no lag: old_decay_rate or
    old_decay_max 0), the iteration makes one optimizer update and lora.dropout is 0. One transformer forward less
    per trained step and micro-batch, the same loss and gradients. "auto" = fused where that holds; "on" = an error
    where it does not; "off" = always the separate forward"""


def policy_scale(config: NFTConfig) -> float:
    """The factor on the policy term of the total loss."""
    if config.weighting == "cocoedit":
        return config.adv_max / config.beta
    if config.weighting == "unit":
        return 1.0
    raise ValueError(f"objective.nft.weighting must be 'cocoedit' or 'unit', got {config.weighting!r}")


def _mean_over_dims(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.mean(dim=tuple(range(1, tensor.ndim)))


def optimality(advantages: torch.Tensor, adv_max: float) -> torch.Tensor:
    return torch.clamp(advantages / adv_max / 2 + 0.5, 0.0, 1.0)


def nft_loss(
    x_t: torch.Tensor,
    t: torch.Tensor,
    x0: torch.Tensor,
    v_theta: torch.Tensor,
    v_old: torch.Tensor,
    advantages: torch.Tensor,
    config: NFTConfig,
    v_ref: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Per-sample NFT loss (B,), plus the branch predictions x̂0± and r for the region regularizer."""
    t = t.to(torch.float32).reshape(-1, *([1] * (x_t.ndim - 1)))
    x_t, x0, v_theta = x_t.float(), x0.float().detach(), v_theta.float()
    v_old = v_old.float().detach()
    r = optimality(advantages.float(), config.adv_max)
    v_positive = config.beta * v_theta + (1 - config.beta) * v_old
    v_negative = (1 + config.beta) * v_old - config.beta * v_theta
    x0_positive = x_t - t * v_positive
    x0_negative = x_t - t * v_negative
    with torch.no_grad():
        w_positive = _mean_over_dims((x0_positive - x0).abs()).clamp_min(config.min_weight)
        w_negative = _mean_over_dims((x0_negative - x0).abs()).clamp_min(config.min_weight)
    positive = _mean_over_dims((x0_positive - x0) ** 2) / w_positive
    negative = _mean_over_dims((x0_negative - x0) ** 2) / w_negative
    loss = (r * positive + (1 - r) * negative) * policy_scale(config)
    if v_ref is not None and config.ref_weight > 0:
        loss = loss + config.ref_weight * _mean_over_dims((v_theta - v_ref.float().detach()) ** 2)
    return loss, {"x0_positive": x0_positive, "x0_negative": x0_negative, "optimality": r}
