"""Masked PSNR / SSIM against scikit-image (SSIM map) and the closed-form PSNR, on random images and masks."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity

from editkit import metrics
from editkit.metrics import masked_psnr, masked_ssim
from tests.support.numerics import assert_close


WINDOW = 11 * 11  # each SSIM moment is a float64 sum over an 11x11 Gaussian window
SSIM_WHY = "float64 SSIM (OpenCV windows) vs scikit-image's (scipy windows), then a mean over the region"
PSNR_WHY = "a float64 MSE over the region's values, in another order, in dB"
# uint8 images and float32 tensors take the float32 path: per-pixel SSIM from float32 window sums (the region's mean
# is then taken in float64), against scikit-image in float64
SSIM32 = dict(dtype=np.float32, accumulations=WINDOW, scale=1.0,
              why="float32 11x11 window sums per pixel (the uint8 / float32 path) vs scikit-image's float64")


def _skimage_ssim(a: np.ndarray, b: np.ndarray, region: np.ndarray) -> float:
    """Reference: skimage's full SSIM map (float64, HxWxC in [0, 1]) averaged over the region's pixels."""
    _, full = structural_similarity(a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                    data_range=1.0, channel_axis=2, full=True)
    return float(full[region].mean())


def _reference_psnr(a: np.ndarray, b: np.ndarray, region: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64))[region] ** 2)
    return 10 * math.log10(1.0 / mse)


def _pair(rng: np.random.Generator, h: int, w: int, noise: float) -> tuple[np.ndarray, np.ndarray]:
    a = rng.random((h, w, 3))
    return a, np.clip(a + noise * rng.standard_normal(a.shape), 0, 1)


@pytest.mark.parametrize("seed", range(4))
def test_single_float_images_match_skimage(seed):
    rng = np.random.default_rng(seed)
    h, w = rng.integers(11, 70, size=2)
    a, b = _pair(rng, h, w, rng.uniform(0.01, 0.3))
    region = rng.random((h, w)) < rng.uniform(0.05, 0.95)
    assert_close(masked_ssim(a, b, region), _skimage_ssim(a, b, region), accumulations=WINDOW * a.size,
                 growth="linear", scale=1.0, why=SSIM_WHY)
    assert_close(masked_psnr(a, b, region), _reference_psnr(a, b, region), accumulations=a.size, growth="linear",
                 why=PSNR_WHY)


def test_uint8_numpy_images_are_scaled_by_255():
    rng = np.random.default_rng(7)
    a = rng.integers(0, 256, (48, 40, 3), dtype=np.uint8)
    b = np.clip(a.astype(int) + rng.integers(-20, 21, a.shape), 0, 255).astype(np.uint8)
    region = np.zeros((48, 40), bool)
    region[5:30, 3:37] = True
    value = masked_ssim(a, b, region)
    assert isinstance(value, float)
    assert_close(value, _skimage_ssim(a / 255.0, b / 255.0, region), **SSIM32)
    expected_psnr = 10 * math.log10(255.0**2 / np.mean((a.astype(float) - b.astype(float))[region] ** 2))
    assert_close(masked_psnr(a, b, region), expected_psnr, dtype=np.float32, accumulations=a.size,
                 why="the float32 path of uint8 images: an MSE over the region's values, in dB")


def test_grayscale_numpy_image():
    rng = np.random.default_rng(3)
    a, b = rng.random((30, 30)), rng.random((30, 30))
    region = rng.random((30, 30)) < 0.5
    _, full = structural_similarity(a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                    data_range=1.0, full=True)
    assert_close(masked_ssim(a, b, region), full[region].mean(), accumulations=WINDOW * a.size, growth="linear",
                 scale=1.0, why=SSIM_WHY)


@pytest.mark.parametrize("per_image_region", [False, True])
def test_batched_tensors_match_per_image_reference(per_image_region):
    rng = np.random.default_rng(11)
    n, h, w = 3, 40, 56
    pairs = [_pair(rng, h, w, s) for s in (0.02, 0.1, 0.4)]
    regions = rng.random((n, h, w)) < 0.4
    a = torch.tensor(np.stack([p[0] for p in pairs]).transpose(0, 3, 1, 2), dtype=torch.float32)
    b = torch.tensor(np.stack([p[1] for p in pairs]).transpose(0, 3, 1, 2), dtype=torch.float32)
    region = torch.from_numpy(regions) if per_image_region else torch.from_numpy(regions[0])
    ssim, psnr = masked_ssim(a, b, region), masked_psnr(a, b, region)
    assert ssim.shape == (n,) and ssim.dtype == torch.float64 and psnr.shape == (n,)
    for i in range(n):
        r = regions[i] if per_image_region else regions[0]
        # The tensors are float32 copies: compare with the reference on the same rounded values.
        ai, bi = a[i].permute(1, 2, 0).double().numpy(), b[i].permute(1, 2, 0).double().numpy()
        assert_close(ssim[i], _skimage_ssim(ai, bi, r), **SSIM32)
        assert_close(psnr[i], _reference_psnr(ai, bi, r), dtype=np.float32, accumulations=ai.size,
                     why="the float32 path of float32 tensors: an MSE over the region's values, in dB")


def test_region_with_channel_axis_and_uint8_tensors():
    rng = np.random.default_rng(5)
    a = torch.from_numpy(rng.integers(0, 256, (2, 3, 24, 24), dtype=np.uint8))
    b = torch.from_numpy(rng.integers(0, 256, (2, 3, 24, 24), dtype=np.uint8))
    region = torch.from_numpy(rng.random((2, 1, 24, 24)) < 0.5)
    got = masked_ssim(a, b, region)
    for i in range(2):
        ai, bi = a[i].permute(1, 2, 0).numpy() / 255.0, b[i].permute(1, 2, 0).numpy() / 255.0
        assert_close(got[i], _skimage_ssim(ai, bi, region[i, 0].numpy()), **SSIM32)


def test_torch_convolution_path_matches_skimage():
    """The accelerator path (grouped conv + reflect indices) run on CPU tensors, against skimage's map."""
    rng = np.random.default_rng(2)
    for h, w in ((64, 48), (9, 13), (3, 4)):  # smaller than the window too: 'reflect' wraps around repeatedly
        a, b = _pair(rng, h, w, 0.1)
        x = torch.from_numpy(a.transpose(2, 0, 1)[None].copy())
        y = torch.from_numpy(b.transpose(2, 0, 1)[None].copy())
        got = metrics._ssim_map_torch(x, y)[0].permute(1, 2, 0).numpy()
        expected = metrics._ssim_map_numpy(a[None], b[None])[0]
        assert_close(got, expected, accumulations=2 * WINDOW, growth="linear", scale=1.0,
                     why="per pixel: float64 grouped convolution vs OpenCV's separable filter, then the SSIM formula")
        if min(h, w) >= 11:  # skimage refuses images smaller than its window
            _, full = structural_similarity(a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                            data_range=1.0, channel_axis=2, full=True)
            assert_close(got, full, accumulations=2 * WINDOW, growth="linear", scale=1.0,
                         why="per pixel: float64 grouped convolution vs scipy's separable filter, then the formula")


def test_edge_cases_identical_empty_and_full_regions():
    rng = np.random.default_rng(1)
    a, b = _pair(rng, 32, 32, 0.1)
    empty, full = np.zeros((32, 32), bool), np.ones((32, 32), bool)
    assert masked_psnr(a, a, full) == math.inf
    assert_close(masked_ssim(a, a, full), 1.0, dtype=np.float64, accumulations=11 * 11 * a.size, growth="linear",
                 why="SSIM of an image with itself: 11x11 float64 windows, a mean over every value")
    assert math.isnan(masked_psnr(a, b, empty)) and math.isnan(masked_ssim(a, b, empty))
    _, ssim_full = structural_similarity(a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                         data_range=1.0, channel_axis=2, full=True)
    assert abs(masked_ssim(a, b, full) - ssim_full.mean()) <= 1e-4
    # Pixels outside the region do not enter PSNR at all.
    c = a.copy()
    c[~(rng.random((32, 32)) < 0.5)] = 0.0
    region = np.all(c == a, axis=-1)
    assert masked_psnr(a, c, region) == math.inf


def test_empty_region_in_a_batch_and_non_finite_images_give_nan():
    a = torch.rand(3, 3, 16, 16)
    b = torch.rand(3, 3, 16, 16)
    region = torch.ones(3, 16, 16, dtype=torch.bool)
    region[1] = False
    b[2, 0, 3, 3] = float("nan")
    for values in (masked_psnr(a, b, region), masked_ssim(a, b, region)):
        assert torch.isfinite(values[0]) and torch.isnan(values[1]) and torch.isnan(values[2])


def test_bad_inputs_raise_clear_errors():
    a = np.zeros((16, 16, 3), np.uint8)
    with pytest.raises(ValueError, match="differ in shape"):
        masked_psnr(a, np.zeros((16, 15, 3), np.uint8), np.ones((16, 16), bool))
    with pytest.raises(ValueError, match="region has shape"):
        masked_ssim(a, a, np.ones((8, 8), bool))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        masked_ssim(torch.full((1, 3, 16, 16), 2.0), torch.zeros(1, 3, 16, 16), torch.ones(16, 16, dtype=torch.bool))
    with pytest.raises(ValueError, match="dtype"):
        masked_psnr(a.astype(np.int32), a.astype(np.int32), np.ones((16, 16), bool))
    with pytest.raises(ValueError, match="numpy images"):
        masked_psnr(np.zeros((2, 16, 16, 3)), np.zeros((2, 16, 16, 3)), np.ones((16, 16), bool))
