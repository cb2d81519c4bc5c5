"""Deterministic multistep DPM-Solver (2nd order) on the flow-matching schedule: CoCoEdit's rollout sampler.

In x0-parametrisation (``x̂0 = x − σ·v``) with ``α = 1 − σ`` and ``λ = log(α/σ)``, from σ_s to σ_t (``h = λ_t − λ_s``):

    first step and last step:  x_t = (σ_t/σ_s)·x − α_t·(e^{−h} − 1)·x̂0_s        (DDIM with η = 0)
    other steps:               D0 = x̂0_s,  D1 = (x̂0_s − x̂0_prev) / r,  r = (λ_s − λ_prev) / h
                               x_t = (σ_t/σ_s)·x − α_t·(e^{−h} − 1)·(D0 + D1/2)

The last step (σ_t = 0) returns x̂0. Coefficients are computed in float64, latents in float32. At σ_prev = 1 the
previous λ is −∞, so the first multistep update degenerates to first order, as in the reference implementation.
"""
from __future__ import annotations

import math

import torch


def _lam(sigma: float) -> float:
    if sigma >= 1.0:
        return -math.inf
    if sigma <= 0.0:
        return math.inf
    return math.log((1.0 - sigma) / sigma)


def dpm2_update(x: torch.Tensor, x0_now: torch.Tensor, x0_prev: torch.Tensor | None, sigma_prev: float | None,
                sigma: float, sigma_next: float, final: bool) -> torch.Tensor:
    """One step from ``sigma`` to ``sigma_next`` given the current (and previous) x0 predictions."""
    if x0_prev is None or final:
        if sigma_next <= 0.0:
            return x0_now
        # DDIM, η = 0: the noise estimate is carried to sigma_next
        noise = (x - (1.0 - sigma) * x0_now) / sigma
        return (1.0 - sigma_next) * x0_now + sigma_next * noise
    h = _lam(sigma_next) - _lam(sigma)
    h_prev = _lam(sigma) - _lam(sigma_prev)
    coefficient = (1.0 - sigma_next) * (math.exp(-h) - 1.0)
    d1 = (x0_now - x0_prev) / (h_prev / h) if math.isfinite(h_prev) else torch.zeros_like(x0_now)
    return (sigma_next / sigma) * x - coefficient * x0_now - 0.5 * coefficient * d1


@torch.no_grad()
def dpm2_sample(velocity, x: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
    """Integrate from ``sigmas[0]`` to ``sigmas[-1]`` with ``velocity(x, sigma) -> v``; returns the final latents."""
    values = [float(s) for s in sigmas]
    steps = len(values) - 1
    x0_prev, x = None, x.float()
    for i in range(steps):
        sigma, sigma_next = values[i], values[i + 1]
        x0_now = x - sigma * velocity(x, sigma).float()
        x = dpm2_update(x, x0_now, x0_prev, values[i - 1] if i > 0 else None, sigma, sigma_next,
                        final=i == steps - 1)
        x0_prev = x0_now
    return x
