"""Sampler math against closed forms in float64."""
from __future__ import annotations

import math

import pytest
import torch

from train.algorithms.sde import cps_step, flow_sde_step, ode_step


def _gaussian_log_density64(x, mean, std):
    x, mean, std = x.double(), mean.double(), std.double().expand_as(mean)
    dens = -((x - mean) ** 2) / (2 * std**2) - torch.log(std) - 0.5 * math.log(2 * math.pi)
    return dens.mean(dim=tuple(range(1, x.ndim)))


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
    torch.testing.assert_close(out.mean.double(), mean, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out.x_next.double(), mean + std * noise.double(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out.log_prob.double(), _gaussian_log_density64(out.x_next, mean, std), rtol=1e-4, atol=1e-4)
    # re-scoring the stored transition gives the same log-prob
    again = flow_sde_step(x, v, sigma, sigma_next, eta, prev_sample=out.x_next)
    assert torch.equal(again.log_prob, out.log_prob)


def test_flow_sde_at_sigma_one_uses_sigma_max():
    x, v = torch.randn(2, 4, 4), torch.randn(2, 4, 4)
    with pytest.raises(ValueError, match="sigma_max"):
        flow_sde_step(x, v, 1.0, 0.9, 0.5)
    out = flow_sde_step(x, v, 1.0, 0.9, 0.5, torch.zeros_like(x), sigma_max=0.9)
    expected_std = 0.5 * math.sqrt(1.0 / (1 - 0.9)) * math.sqrt(0.1)
    assert out.std.flatten()[0].item() == pytest.approx(expected_std, rel=1e-5)


@pytest.mark.parametrize("step", [flow_sde_step, cps_step])
def test_noise_level_zero_is_euler(step):
    g = torch.Generator().manual_seed(1)
    x, v = torch.randn(2, 9, 4, generator=g), torch.randn(2, 9, 4, generator=g)
    out = step(x, v, 0.6, 0.45, 0.0, torch.randn(2, 9, 4, generator=g))
    torch.testing.assert_close(out.x_next, ode_step(x, v, 0.6, 0.45), rtol=1e-6, atol=1e-6)
    assert torch.all(out.log_prob == 0)


@pytest.mark.parametrize("seed", range(3))
def test_cps_matches_formula(seed):
    g = torch.Generator().manual_seed(seed)
    x, v, noise = (torch.randn(2, 5, 6, generator=g) for _ in range(3))
    sigma, sigma_next, eta = 0.7, 0.55, 0.6
    out = cps_step(x.to(torch.bfloat16), v, sigma, sigma_next, eta, noise)
    xd, vd = x.to(torch.bfloat16).double(), v.double()
    std = sigma_next * math.sin(eta * math.pi / 2)
    mean = (xd - sigma * vd) * (1 - sigma_next) + (xd + (1 - sigma) * vd) * math.sqrt(sigma_next**2 - std**2)
    assert out.mean.dtype == torch.float32 and out.x_next.dtype == torch.bfloat16
    torch.testing.assert_close(out.mean.double(), mean, rtol=1e-5, atol=1e-5)
    x_next32 = (out.mean + std * noise).double()
    torch.testing.assert_close(out.log_prob.double(), _gaussian_log_density64(x_next32, mean, torch.tensor(std)),
                               rtol=1e-4, atol=1e-4)
