"""Rollouts: denoise from noise to clean latents with the policy, recording the SDE transitions GRPO trains on.

Steps inside ``window = [start, end)`` are stochastic (Flow-SDE or CPS, with log-probs); the others are the
deterministic Euler ODE. ``noise_level = 0`` or an empty window gives the ODE rollout NFT and evaluation use.
``keep_graph`` (GRPO's on-policy update, :mod:`train.trainers.grpo`) runs chosen SDE steps' forwards with gradients
and keeps each step's transition (:class:`~train.algorithms.sde.StepOutput`, its mean and log-prob with their graph)
in ``Trajectory.graphs``; every state stays detached, so a kept step's gradient is the one a recomputed forward on
the stored state gives.
Per-sample noise comes from per-sample generators, so a sample does not depend on its batch neighbours, on the
micro-batch size or on the number of processes.
"""
from __future__ import annotations

from collections.abc import Callable
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
    graphs: dict = field(default_factory=dict)  # step index -> StepOutput with its autograd graph (keep_graph)


def per_sample_normal(shape: tuple[int, ...], generators: list[torch.Generator]) -> torch.Tensor:
    return torch.stack([torch.randn(shape, generator=g) for g in generators])


def rollout(adapter, model, cond, x: torch.Tensor, sigmas: torch.Tensor, *, sde: str, noise_level: float,
            window: tuple[int, int], generators: list[torch.Generator], autocast, per_token: bool = False,
            keep_means: bool = False, keep_graph: Callable[[int], bool] | None = None,
            sde_tokens: torch.Tensor | None = None) -> Trajectory:
    """``per_token`` records (B, L) log-probs (one per packed token, for per-token advantages) instead of (B,).
    ``keep_graph(i)`` is asked before each SDE step's forward: True runs it with gradients and keeps its graph.
    ``sde_tokens`` ((B, L) bool, NFT's region noise): the SDE steps move only these tokens stochastically, the others
    take the ODE step (no log-probs are meaningful then; NFT needs none)."""
    trajectory = Trajectory(final=x)
    sigma_max = float(sigmas[1]) if len(sigmas) > 1 else None
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = float(sigmas[i]), float(sigmas[i + 1])
        sde_step = window[0] <= i < window[1] and noise_level > 0
        keep = sde_step and keep_graph is not None and keep_graph(i)
        with torch.set_grad_enabled(keep), autocast():
            v = adapter.velocity(model, x, torch.full((x.shape[0],), sigma), cond)
        with torch.set_grad_enabled(keep):
            if sde_step:
                noise = per_sample_normal(tuple(x.shape[1:]), generators).to(x.device)
                out = sde_transition(sde, x, v, sigma, sigma_next, noise_level, noise, sigma_max=sigma_max)
                if keep:
                    trajectory.graphs[i] = out
                x_next = out.x_next.detach()
                if sde_tokens is not None:
                    x_next = torch.where(sde_tokens.to(x.device)[..., None], x_next,
                                         ode_step(x.float(), v.detach(), sigma, sigma_next).to(x_next.dtype))
                trajectory.states[i], trajectory.next_states[i] = x, x_next
                if keep_means:
                    trajectory.means[i] = out.mean.detach()
                log_prob = gaussian_log_prob(x_next, out.mean, out.std, per_token=True) if per_token \
                    else out.log_prob
                trajectory.log_probs[i] = log_prob.detach()
                x = x_next
            else:
                x = ode_step(x.float(), v, sigma, sigma_next)
    trajectory.final = x
    return trajectory
