"""RC-GRPO region-decoupled initial noise: shared outside the edit mask within a group, independent inside, N(0, 1)."""
from __future__ import annotations

import pytest
import torch

from train.algorithms.region_noise import group_noise_seed, region_decoupled_noise


def _noise(groups: int, size: int, tokens: int, channels: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    group_ids = torch.arange(groups).repeat_interleave(size)
    own = torch.randn(groups * size, tokens, channels, generator=g)
    shared = {k: torch.randn(tokens, channels, generator=g) for k in range(groups)}
    inside = (torch.rand(groups, tokens, generator=g) < 0.3).repeat_interleave(size, dim=0)  # one mask per prompt
    return region_decoupled_noise(own, group_ids, inside, shared), own, shared, inside, group_ids


def test_members_share_the_background_and_differ_in_the_edit_region():
    noise, own, shared, inside, group_ids = _noise(groups=3, size=4, tokens=20, channels=5)
    for i in range(noise.shape[0]):
        assert torch.equal(noise[i][~inside[i]], shared[int(group_ids[i])][~inside[i]])
        assert torch.equal(noise[i][inside[i]], own[i][inside[i]])
    assert not torch.equal(noise[0][inside[0]], noise[1][inside[1]])
    assert not torch.equal(noise[0][~inside[0]], noise[4][~inside[4]])  # other group, other background


def test_marginal_is_standard_normal_and_inside_tokens_independent():
    # n independent N(0,1) values: the sample mean has std 1/sqrt(n), the sample variance std sqrt(2/n);
    # 5 standard errors make a false failure (~6e-7) practically impossible while catching a wrong scale/offset.
    groups, size, tokens, channels = 400, 2, 64, 8
    noise, _, _, inside, _ = _noise(groups, size, tokens, channels, seed=3)
    first = noise[0::size]  # one member per group: independent across groups, every token one N(0,1) draw
    for region in (inside[0::size], ~inside[0::size]):
        values = first[region]
        n = values.numel()
        assert abs(float(values.mean())) < 5 / n**0.5
        assert abs(float(values.var()) - 1) < 5 * (2 / n) ** 0.5
    both_inside = inside[0::size]  # masks are per prompt, so both members have the same edit tokens
    a, b = noise[0::size][both_inside].flatten(), noise[1::size][both_inside].flatten()
    correlation = float(torch.corrcoef(torch.stack([a, b]))[0, 1])
    assert abs(correlation) < 5 / a.numel() ** 0.5  # independent inside the mask
    outside = ~both_inside
    assert torch.equal(noise[0::size][outside], noise[1::size][outside])  # identical outside


def test_group_seeds_are_deterministic_and_distinct():
    assert group_noise_seed(0, 3, 7) == group_noise_seed(0, 3, 7)
    assert len({group_noise_seed(0, s, g) for s in range(5) for g in range(50)}) == 250


def test_bad_inputs_are_rejected():
    own = torch.zeros(2, 4, 3)
    with pytest.raises(ValueError, match="disagree"):
        region_decoupled_noise(own, torch.tensor([0, 0]), torch.zeros(2, 5, dtype=torch.bool), {0: torch.zeros(4, 3)})
    with pytest.raises(ValueError, match="no shared noise"):
        region_decoupled_noise(own, torch.tensor([0, 1]), torch.zeros(2, 4, dtype=torch.bool), {0: torch.zeros(4, 3)})
