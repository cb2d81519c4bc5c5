"""CoCoEdit's masked PSNR/SSIM convention (its released reward scorer), next to ours in :mod:`editkit.metrics`.

Same inputs and NaN rule as ``masked_psnr`` / ``masked_ssim`` (``region`` True = measured, i.e. the NON-edited
pixels), data range 1. The definitions differ from the textbook ones on purpose — they are what CoCoEdit's numbers
mean:

* PSNR: ``MSE = Σ_{c,h,w} region·(a − b)² / (Σ_{h,w} region + 1e-8)`` — the squared error summed over the 3
  channels but divided by the 1-channel pixel count (3× the per-element MSE, so 10·log10(3) = 4.77 dB below the
  textbook PSNR), clamped at 1e-8 (80 dB at most); ``PSNR = 10·log10(1 / MSE)``.
* SSIM: per channel, the 11×11 Gaussian (σ 1.5, sum 1, zero padding) sums of the region-masked moments divided by
  the UNWEIGHTED 11×11 count of region pixels (+1e-8), ``μ = G∗(a·m) / n``, ``σ² = G∗(a²·m) / n − μ²``,
  ``σ_ab = G∗(ab·m) / n − μ_a μ_b``, C1 = 1e-4, C2 = 9e-4; the map is averaged over channels, then over the
  region's pixels, and clamped to [0, 1]. Because the count is ~121 where the Gaussian sums to 1, the "moments" are
  ~1/121 of the local ones and the score stays near 1 for most images.
"""
from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["cocoedit_masked_psnr", "cocoedit_masked_ssim"]

_WINDOW, _SIGMA = 11, 1.5


def cocoedit_masked_psnr(a: Any, b: Any, region: Any) -> Any:
    """CoCoEdit's masked PSNR (dB); NaN when the region is empty."""
    x, y, m, single = _prepare(a, b, region)
    count = m.sum(dim=(1, 2, 3))
    mse = (((x - y) ** 2) * m).sum(dim=(1, 2, 3)) / (count + 1e-8)
    psnr = 10.0 * _torch().log10(1.0 / mse.clamp_min(1e-8))
    return _finish(psnr.masked_fill(count == 0, float("nan")), single)


def cocoedit_masked_ssim(a: Any, b: Any, region: Any) -> Any:
    """CoCoEdit's masked SSIM in [0, 1]; NaN when the region is empty."""
    torch = _torch()
    x, y, m, single = _prepare(a, b, region)
    channels = x.shape[1]
    taps = torch.arange(_WINDOW, dtype=x.dtype, device=x.device) - _WINDOW // 2
    gauss = torch.exp(-(taps**2) / (2 * _SIGMA**2))
    gauss = gauss / gauss.sum()
    window = (gauss[:, None] @ gauss[None, :]).expand(channels, 1, _WINDOW, _WINDOW)
    ones = torch.ones_like(window)
    mc = m.expand(-1, channels, -1, -1)

    def blur(image, kernel):
        return torch.nn.functional.conv2d(image, kernel, padding=_WINDOW // 2, groups=channels)

    count = blur(mc, ones) + 1e-8
    mu_x, mu_y = blur(x * mc, window) / count, blur(y * mc, window) / count
    var_x = blur(x * x * mc, window) / count - mu_x**2
    var_y = blur(y * y * mc, window) / count - mu_y**2
    cov = blur(x * y * mc, window) / count - mu_x * mu_y
    c1, c2 = 0.01**2, 0.03**2
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    pixels = m.sum(dim=(1, 2, 3))
    ssim = (ssim_map.mean(dim=1, keepdim=True) * m).sum(dim=(1, 2, 3)) / (pixels + 1e-8)
    return _finish(ssim.clamp(0.0, 1.0).masked_fill(pixels == 0, float("nan")), single)


def _torch():
    import torch

    return torch


def _prepare(a: Any, b: Any, region: Any):
    """-> float64 (N, C, H, W) images in [0, 1], (N, 1, H, W) region, and whether one image was given."""
    torch = _torch()
    single = not (isinstance(a, torch.Tensor) and a.ndim == 4)
    x, y = _as_nchw(a), _as_nchw(b)
    if x.shape != y.shape:
        raise ValueError(f"image shapes differ: {tuple(x.shape)} vs {tuple(y.shape)}")
    m = torch.as_tensor(np.asarray(region) if not isinstance(region, torch.Tensor) else region)
    m = m.to(device=x.device, dtype=torch.bool)
    if m.ndim == 2:
        m = m.expand(x.shape[0], -1, -1)
    if m.ndim == 3:
        m = m.unsqueeze(1)
    if m.shape[2:] != x.shape[2:] or m.shape[0] != x.shape[0]:
        raise ValueError(f"region {tuple(m.shape)} does not fit images {tuple(x.shape)}")
    return x, y, m.to(torch.float64), single


def _as_nchw(image: Any):
    torch = _torch()
    if isinstance(image, torch.Tensor):
        t = image if image.ndim == 4 else image.unsqueeze(0)  # (C, H, W) -> (1, C, H, W)
    else:
        array = np.asarray(image)
        array = array[..., None] if array.ndim == 2 else array
        t = torch.from_numpy(np.array(array)).permute(2, 0, 1).unsqueeze(0)  # a copy: inputs may be read-only
    if t.dtype == torch.uint8:
        return t.to(torch.float64) / 255.0
    t = t.to(torch.float64)
    if torch.isfinite(t).all() and (t.min() < 0 or t.max() > 1):
        raise ValueError("float images must lie in [0, 1]")
    return t


def _finish(values, single: bool):
    return float(values[0]) if single else values
