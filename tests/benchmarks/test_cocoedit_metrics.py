"""CoCoEdit's masked PSNR/SSIM convention against a re-implementation of its scorer's formula (numpy + scipy, a
different route than our torch convolution), and its selection in the pixel reward and the benchmark scores."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import ndimage

from editkit.metrics import masked_psnr, metric_pair
from editkit.metrics_cocoedit import cocoedit_masked_psnr, cocoedit_masked_ssim
from tests.support.numerics import assert_close

WINDOW = 11 * 11  # the SSIM window: each local moment is a float64 sum of 121 products


def reference_psnr(x, y, m):
    """x, y (H, W, 3) float in [0, 1]; m (H, W) {0, 1}: error summed over channels / 1-channel pixel count."""
    mse = ((x - y) ** 2 * m[..., None]).sum() / (m.sum() + 1e-8)
    return 10 * math.log10(1 / max(mse, 1e-8))


def reference_ssim(x, y, m):
    taps = np.arange(11) - 5
    g = np.exp(-(taps**2) / (2 * 1.5**2))
    g /= g.sum()
    window = np.outer(g, g)

    def conv(image, kernel):  # zero padding ('constant' 0), same-size output
        return ndimage.correlate(image, kernel, mode="constant", cval=0.0)

    maps = []
    for c in range(3):
        a, b = x[..., c], y[..., c]
        area = conv(m, np.ones((11, 11))) + 1e-8
        mu_a, mu_b = conv(a * m, window) / area, conv(b * m, window) / area
        s_a = conv(a * a * m, window) / area - mu_a**2
        s_b = conv(b * b * m, window) / area - mu_b**2
        s_ab = conv(a * b * m, window) / area - mu_a * mu_b
        c1, c2 = 1e-4, 9e-4
        maps.append(((2 * mu_a * mu_b + c1) * (2 * s_ab + c2)) / ((mu_a**2 + mu_b**2 + c1) * (s_a + s_b + c2)))
    value = (np.mean(maps, axis=0) * m).sum() / (m.sum() + 1e-8)
    return float(np.clip(value, 0, 1))


def _pair(seed, size=(40, 52), noise=0.05):
    g = np.random.default_rng(seed)
    yy, xx = np.mgrid[: size[0], : size[1]] / 20.0
    base = np.stack([np.sin(xx + c) * np.cos(yy - c) for c in range(3)], -1) * 0.4 + 0.5
    edited = np.clip(base + g.normal(0, noise, base.shape), 0, 1)
    region = np.ones(size, bool)
    region[8:24, 10:30] = False  # the edit region is not measured
    region |= g.random(size) < 0.01
    return base, edited, region


@pytest.mark.parity
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_cocoedit_metrics_match_the_formula(seed):
    a, b, region = _pair(seed, noise=0.02 + 0.1 * seed)
    m = region.astype(np.float64)
    assert_close(cocoedit_masked_psnr(a, b, region), reference_psnr(a, b, m), accumulations=a.size, growth="linear",
                 why="CoCoEdit's PSNR formula re-implemented: float64 sums over every value, another order")
    assert_close(cocoedit_masked_ssim(a, b, region), reference_ssim(a, b, m), accumulations=WINDOW * a.size,
                 growth="linear", why="CoCoEdit's SSIM re-implemented: float64 windows, then a masked mean")
    # batched torch input gives the same per-image values
    batch_a = torch.from_numpy(np.stack([a, b])).permute(0, 3, 1, 2)
    batch_b = torch.from_numpy(np.stack([b, b])).permute(0, 3, 1, 2)
    ssim = cocoedit_masked_ssim(batch_a, batch_b, torch.from_numpy(np.stack([region, region])))
    assert ssim.shape == (2,)
    assert_close(ssim[0], reference_ssim(a, b, m), accumulations=WINDOW * a.size, growth="linear",
                 why="the batched torch path of the same float64 formula")
    assert_close(ssim[1], 1.0, accumulations=WINDOW * a.size, growth="linear", why="SSIM of an image with itself")


def test_cocoedit_psnr_is_4_77_db_below_ours_and_empty_is_nan():
    a, b, region = _pair(3)
    gap = masked_psnr(a, b, region) - cocoedit_masked_psnr(a, b, region)
    assert_close(gap, 10 * math.log10(3), accumulations=a.size, growth="linear", scale=masked_psnr(a, b, region),
                 why="a difference of two float64 PSNRs (dB): its error is relative to the PSNRs, not to the gap")
    assert_close(cocoedit_masked_psnr(a, a, region), 80.0, accumulations=2, why="10 log10(1 / 1e-8)")  # MSE clamped
    empty = np.zeros(region.shape, bool)
    assert math.isnan(cocoedit_masked_psnr(a, b, empty)) and math.isnan(cocoedit_masked_ssim(a, b, empty))
    uint8 = (a * 255).round().astype(np.uint8)
    assert_close(cocoedit_masked_psnr(uint8, uint8, region), 80.0, accumulations=2, why="10 log10(1 / 1e-8)")
    with pytest.raises(ValueError, match="convention"):
        metric_pair("paper")


def test_reward_and_benchmark_scores_select_the_convention():
    from benchmarks.pixel_metrics import pixel_metrics
    from train.rewards import RewardInputs
    from train.rewards.pixel import pixel_consistency

    a, b, region = _pair(4)
    to_uint8 = lambda image: (image * 255).round().astype(np.uint8)  # noqa: E731
    ours = pixel_metrics(to_uint8(a), to_uint8(b), ~region)["scores"]
    theirs = pixel_metrics(to_uint8(a), to_uint8(b), ~region, convention="cocoedit")["scores"]
    assert_close(theirs["psnr_bg"], cocoedit_masked_psnr(to_uint8(a), to_uint8(b), region), accumulations=1,
                 why="the same function, called through pixel_metrics")
    assert_close(theirs["ssim_bg"], cocoedit_masked_ssim(to_uint8(a), to_uint8(b), region), accumulations=1,
                 why="the same function, called through pixel_metrics")
    assert_close(ours["psnr_bg"] - theirs["psnr_bg"], 10 * math.log10(3), accumulations=a.size, growth="linear",
                 scale=ours["psnr_bg"], why="a difference of two float64 PSNRs: error relative to the PSNRs")

    images = torch.from_numpy(np.stack([b])).permute(0, 3, 1, 2)
    sources = torch.from_numpy(np.stack([a])).permute(0, 3, 1, 2)
    fields = RewardInputs.__dataclass_fields__
    inputs = RewardInputs(**{name: None for name in fields if name not in ("images", "sources", "edit_masks")},
                          images=images, sources=sources, edit_masks=torch.from_numpy(~region)[None])
    value = float(pixel_consistency(convention="cocoedit")(inputs)[0])
    expected = 0.35 * reference_ssim(a, b, region.astype(float)) + 0.65 * min(reference_psnr(a, b, region) / 40, 1)
    assert_close(value, expected, accumulations=WINDOW * a.size, growth="linear",
                 why="the reward's float64 SSIM and PSNR vs the reference formulas, mixed 0.35 / 0.65")
    with pytest.raises(ValueError, match="convention"):
        pixel_consistency(convention="paper")
