"""Sampler math against closed forms in float64."""
from __future__ import annotations

import math

import pytest
import torch

from tests.support.numerics import assert_close, skip_if_forced_capability_unsupported
from train.algorithms.sde import cps_step, flow_sde_step, ode_step

# the float32 step: about 8 roundings per element (products, sums, sqrt) against the float64 closed form
STEP_OPS = 8


def _gaussian_log_density64(x, mean, std):
    x, mean, std = x.double(), mean.double(), std.double().expand_as(mean)
    dens = -((x - mean) ** 2) / (2 * std**2) - torch.log(std) - 0.5 * math.log(2 * math.pi)
    return dens.mean(dim=tuple(range(1, x.ndim)))


@pytest.mark.parity
@pytest.mark.parametrize("seed", range(4))
def test_flow_sde_log_prob_is_gaussian_density(seed):
    g = torch.Generator().manual_seed(seed)
    x, v, noise = (torch.randn(3, 16, 8, generator=g) for _ in range(3))
    sigma = torch.rand(3, generator=g) * 0.8 + 0.1
    sigma_next = sigma - torch.rand(3, generator=g) * 0.09
    eta = 0.7
    out = flow_sde_step(x, v, sigma, sigma_next, eta, noise)
    # independent float64 closed form
    s, sn = sigma.double()[:, None, None], sigma_next.double()[:, None, None]
    dt = sn - s
    std_t = eta * torch.sqrt(s / (1 - s))
    mean = x.double() * (1 + std_t**2 / (2 * s) * dt) + v.double() * (1 + std_t**2 * (1 - s) / (2 * s)) * dt
    std = std_t * torch.sqrt(-dt)
    assert_close(out.mean, mean, dtype=torch.float32, accumulations=STEP_OPS, growth="linear",
                 why="the float32 step's roundings against the float64 closed form")
    assert_close(out.x_next, mean + std * noise.double(), dtype=torch.float32, accumulations=STEP_OPS + 2,
                 growth="linear", why="the mean's roundings plus std × noise")
    assert_close(out.log_prob, _gaussian_log_density64(out.x_next, mean, std), dtype=torch.float32,
                 accumulations=x[0].numel(), growth="linear", scale=float(out.log_prob.abs().max()) + 1.0,
                 why="a float32 mean of 128 log densities; (x - mean) / std amplifies the mean's rounding")
    # re-scoring the stored transition gives the same log-prob
    again = flow_sde_step(x, v, sigma, sigma_next, eta, prev_sample=out.x_next)
    assert torch.equal(again.log_prob, out.log_prob)


def test_flow_sde_at_sigma_one_uses_sigma_max():
    x, v = torch.randn(2, 4, 4), torch.randn(2, 4, 4)
    with pytest.raises(ValueError, match="sigma_max"):
        flow_sde_step(x, v, 1.0, 0.9, 0.5)
    out = flow_sde_step(x, v, 1.0, 0.9, 0.5, torch.zeros_like(x), sigma_max=0.9)
    expected_std = 0.5 * math.sqrt(1.0 / (1 - 0.9)) * math.sqrt(0.1)
    assert_close(out.std.flatten()[0], expected_std, accumulations=4, growth="linear",
                 why="eta × sqrt(s / (1 - s)) × sqrt(-dt) in float32: 4 roundings")


@pytest.mark.parity
@pytest.mark.parametrize("step", [flow_sde_step, cps_step])
def test_noise_level_zero_is_euler(step):
    g = torch.Generator().manual_seed(1)
    x, v = torch.randn(2, 9, 4, generator=g), torch.randn(2, 9, 4, generator=g)
    out = step(x, v, 0.6, 0.45, 0.0, torch.randn(2, 9, 4, generator=g))
    assert_close(out.x_next, ode_step(x, v, 0.6, 0.45), accumulations=STEP_OPS,
                 why="the SDE step's float32 mean at zero noise vs the Euler step written another way")
    assert torch.all(out.log_prob == 0)


@pytest.mark.parity
@pytest.mark.parametrize("seed", range(3))
@skip_if_forced_capability_unsupported()  # bf16 kernels: torch may refuse them under a forced capability
def test_cps_matches_formula(seed):
    g = torch.Generator().manual_seed(seed)
    x, v, noise = (torch.randn(2, 5, 6, generator=g) for _ in range(3))
    sigma, sigma_next, eta = 0.7, 0.55, 0.6
    out = cps_step(x.to(torch.bfloat16), v, sigma, sigma_next, eta, noise)
    xd, vd = x.to(torch.bfloat16).double(), v.double()
    std = sigma_next * math.sin(eta * math.pi / 2)
    mean = (xd - sigma * vd) * (1 - sigma_next) + (xd + (1 - sigma) * vd) * math.sqrt(sigma_next**2 - std**2)
    assert out.mean.dtype == torch.float32 and out.x_next.dtype == torch.bfloat16
    assert_close(out.mean, mean, dtype=torch.float32, accumulations=STEP_OPS, growth="linear",
                 why="the float32 CPS mean (from bf16 x, exactly representable) vs float64")
    x_next32 = (out.mean + std * noise).double()
    assert_close(out.log_prob, _gaussian_log_density64(x_next32, mean, torch.tensor(std)), dtype=torch.float32,
                 accumulations=x[0].numel(), growth="linear", scale=float(out.log_prob.abs().max()) + 1.0,
                 why="a float32 mean of 30 log densities; (x - mean) / std amplifies the mean's rounding")
