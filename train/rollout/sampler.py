"""Rollouts: denoise from noise to clean latents with the policy, recording the SDE transitions GRPO trains on.

Steps inside ``window = [start, end)`` are stochastic (Flow-SDE or CPS, with log-probs); the others are the
deterministic Euler ODE. ``noise_level = 0`` or an empty window gives the ODE rollout NFT and evaluation use.
Per-sample noise comes from per-sample generators, so a sample does not depend on its batch neighbours, on the
micro-batch size or on the number of processes.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from train.algorithms.sde import gaussian_log_prob, ode_step, sde_transition


@dataclass
class Trajectory:
    final: torch.Tensor  # (B, L, C) clean latents
    states: dict[int, torch.Tensor] = field(default_factory=dict)  # step index -> x before the step (SDE steps)
    next_states: dict[int, torch.Tensor] = field(default_factory=dict)  # step index -> x after the step
    log_probs: dict[int, torch.Tensor] = field(default_factory=dict)  # step index -> (B,)
    means: dict[int, torch.Tensor] = field(default_factory=dict)  # step index -> the transition mean (GRPO-Guard)


def per_sample_normal(shape: tuple[int, ...], generators: list[torch.Generator]) -> torch.Tensor:
    return torch.stack([torch.randn(shape, generator=g) for g in generators])


@torch.no_grad()
def rollout(adapter, model, cond, x: torch.Tensor, sigmas: torch.Tensor, *, sde: str, noise_level: float,
            window: tuple[int, int], generators: list[torch.Generator], autocast, per_token: bool = False,
            keep_means: bool = False) -> Trajectory:
    """``per_token`` records (B, L) log-probs (one per packed token, for per-token advantages) instead of (B,)."""
    trajectory = Trajectory(final=x)
    sigma_max = float(sigmas[1]) if len(sigmas) > 1 else None
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = float(sigmas[i]), float(sigmas[i + 1])
        with autocast():
            v = adapter.velocity(model, x, torch.full((x.shape[0],), sigma), cond)
        if window[0] <= i < window[1] and noise_level > 0:
            noise = per_sample_normal(tuple(x.shape[1:]), generators).to(x.device)
            out = sde_transition(sde, x, v, sigma, sigma_next, noise_level, noise, sigma_max=sigma_max)
            trajectory.states[i], trajectory.next_states[i] = x, out.x_next
            if keep_means:
                trajectory.means[i] = out.mean
            trajectory.log_probs[i] = gaussian_log_prob(out.x_next, out.mean, out.std, per_token=True) if per_token \
                else out.log_prob
            x = out.x_next
        else:
            x = ode_step(x.float(), v, sigma, sigma_next)
    trajectory.final = x
    return trajectory
