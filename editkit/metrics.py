"""Masked image metrics: PSNR and SSIM measured over a chosen region's pixels only.

``masked_psnr(a, b, region)`` and ``masked_ssim(a, b, region)`` compare two images on the pixels where ``region``
is True (for a consistency score that is the NON-edited region, ``~edit_mask``).

Inputs
    * batched torch tensors ``(N, C, H, W)`` (float in [0, 1], or uint8 0..255) -> a float64 tensor ``(N,)`` on
      the input's device;
    * one image: numpy ``(H, W, 3)`` / ``(H, W)`` (uint8, or float in [0, 1]) or torch ``(C, H, W)`` -> a float.
    ``region``: boolean ``(H, W)`` (shared by the batch), ``(N, H, W)`` or ``(N, 1, H, W)``; numpy or torch.

Definitions (data range 1)
    * PSNR = ``10·log10(1 / MSE)`` with the MSE over the region's pixels and all channels; identical pixels -> +inf.
    * SSIM = the SSIM map exactly as scikit-image computes it with ``gaussian_weights=True, sigma=1.5,
      use_sample_covariance=False, data_range=1, K1=0.01, K2=0.03`` (11-tap Gaussian window, scipy's 'reflect'
      border), averaged over the region's pixels per channel, then over channels (skimage's ``channel_axis``).
      The window still sees pixels outside the region near its border: that is what the full map means.

Unlike CompBench / PIE-Bench, which zero the edit region and average over ALL pixels (diluting the error as the
mask grows), these average over the measured pixels only.

NaN means "nothing to measure": the region is empty (e.g. the edit mask covers the whole image), or that image holds
non-finite values. Callers treat NaN as "not applicable", never as a score.

CPU inputs are computed with numpy + OpenCV's separable filter in float32 (uint8 input) or float64 (float64 input):
~10x faster than scipy/torch CPU filters here. Tensors on an accelerator stay there and use a grouped torch
convolution. Both paths are tested against scikit-image.
"""
from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["masked_psnr", "masked_ssim", "sum_channels", "metric_pair", "CONVENTIONS", "SSIM_SIGMA", "SSIM_RADIUS"]

CONVENTIONS = ("standard", "cocoedit")  # standard: the definitions above; cocoedit: editkit.metrics_cocoedit

SSIM_SIGMA = 1.5
SSIM_RADIUS = int(3.5 * SSIM_SIGMA + 0.5)  # skimage: truncate=3.5 -> 11 taps
SSIM_K1, SSIM_K2 = 0.01, 0.03
_CV_MAX_CHANNELS = 512  # OpenCV's limit on channels per image


def masked_psnr(a: Any, b: Any, region: Any) -> Any:
    """PSNR (dB) of ``a`` vs ``b`` over ``region``'s pixels; +inf when identical there, NaN when region is empty."""
    pair = _Pair(a, b, region)
    squared = pair.region_sum((pair.x - pair.y) ** 2)
    with np.errstate(divide="ignore", invalid="ignore"):
        return pair.finish(10.0 * np.log10(pair.count / squared))  # 1 / MSE; identical: 1 / 0 -> +inf


def masked_ssim(a: Any, b: Any, region: Any) -> Any:
    """Mean of skimage's Gaussian SSIM map over ``region``'s pixels (and channels); NaN when region is empty."""
    pair = _Pair(a, b, region)
    ssim = _ssim_map_numpy(pair.x, pair.y) if pair.on_cpu else _ssim_map_torch(pair.x, pair.y)
    with np.errstate(divide="ignore", invalid="ignore"):
        return pair.finish(pair.region_sum(ssim) / pair.count)


def sum_channels(values: np.ndarray) -> np.ndarray:
    """``values.sum(-1)`` over a short last (channel) axis, added in the same order (bit-identical, tested) but
    ~20x faster: numpy's reduction over a length-3 inner axis pays its per-row loop overhead on every pixel."""
    total = values[..., 0].copy()
    for channel in range(1, values.shape[-1]):
        total += values[..., channel]
    return total


def metric_pair(convention: str = "standard"):
    """(masked PSNR, masked SSIM) functions of a convention: ``standard`` (these) or ``cocoedit`` (CoCoEdit's
    released scorer, :mod:`editkit.metrics_cocoedit`, for numbers comparable with its paper)."""
    if convention == "standard":
        return masked_psnr, masked_ssim
    if convention == "cocoedit":
        from editkit.metrics_cocoedit import cocoedit_masked_psnr, cocoedit_masked_ssim

        return cocoedit_masked_psnr, cocoedit_masked_ssim
    raise ValueError(f"metrics convention must be one of {CONVENTIONS}, got {convention!r}")


# ---------------------------------------------------------------- SSIM map
def _gaussian_kernel() -> np.ndarray:
    taps = np.arange(-SSIM_RADIUS, SSIM_RADIUS + 1, dtype=np.float64)
    kernel = np.exp(-0.5 * (taps / SSIM_SIGMA) ** 2)
    return kernel / kernel.sum()  # as scipy.ndimage.gaussian_filter builds it


_KERNELS = {np.dtype(t): _gaussian_kernel().astype(t) for t in (np.float32, np.float64)}  # built once, not per blur


def _ssim_from_moments(ux: Any, uy: Any, uxx: Any, uyy: Any, uxy: Any) -> Any:
    """skimage's SSIM formula from the blurred moments; in place (overwrites the moments) to spare temporaries."""
    c1, c2 = SSIM_K1**2, SSIM_K2**2
    uxx -= ux * ux  # vx: population covariance (Wang et al. 2004)
    uyy -= uy * uy  # vy
    uxy -= ux * uy  # vxy
    uxy *= 2
    uxy += c2  # A2 = 2 vxy + C2
    uxx += uyy
    uxx += c2  # B2 = vx + vy + C2
    numerator = ux * uy
    numerator *= 2
    numerator += c1  # A1 = 2 ux uy + C1
    ux *= ux
    uy *= uy
    ux += uy
    ux += c1  # B1 = ux^2 + uy^2 + C1
    numerator *= uxy
    ux *= uxx
    numerator /= ux
    return numerator


def _ssim_map_numpy(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """(N, H, W, C) -> the SSIM map (N, H, W, C), each moment blurred by OpenCV's separable filter."""
    out = np.empty_like(x)
    for i in range(x.shape[0]):
        xi, yi = x[i], y[i]
        out[i] = _ssim_from_moments(_cv_blur(xi), _cv_blur(yi), _cv_blur(xi * xi), _cv_blur(yi * yi), _cv_blur(xi * yi))
    return out


def _cv_blur(image: np.ndarray) -> np.ndarray:
    """Gaussian window over (H, W) of an (H, W, C) array, scipy 'reflect' border (OpenCV's BORDER_REFLECT)."""
    import cv2

    kernel = _KERNELS.get(image.dtype)
    kernel = _gaussian_kernel().astype(image.dtype) if kernel is None else kernel
    if image.shape[-1] <= _CV_MAX_CHANNELS:  # one call, no copy (the common case)
        return cv2.sepFilter2D(np.ascontiguousarray(image), -1, kernel, kernel,
                               borderType=cv2.BORDER_REFLECT).reshape(image.shape)
    out = np.empty_like(image)
    for start in range(0, image.shape[-1], _CV_MAX_CHANNELS):  # OpenCV takes at most 512 channels per call
        chunk = np.ascontiguousarray(image[..., start:start + _CV_MAX_CHANNELS])
        # The kernel is symmetric, so OpenCV's correlation equals scipy's.
        blurred = cv2.sepFilter2D(chunk, -1, kernel, kernel, borderType=cv2.BORDER_REFLECT)
        out[..., start:start + _CV_MAX_CHANNELS] = blurred.reshape(chunk.shape)
    return out


def _ssim_map_torch(x: Any, y: Any) -> Any:
    """(N, C, H, W) on an accelerator -> the SSIM map; the 5·N·C moment planes blurred by one grouped conv."""
    import torch
    import torch.nn.functional as F

    n, c, h, w = x.shape
    planes = torch.cat([x, y, x * x, y * y, x * y], dim=1).reshape(1, 5 * n * c, h, w)
    kernel = torch.as_tensor(_gaussian_kernel(), dtype=x.dtype, device=x.device)
    groups = planes.shape[1]
    planes = planes.index_select(2, _reflect_index(h, x.device))
    planes = F.conv2d(planes, kernel.view(1, 1, -1, 1).expand(groups, 1, -1, 1), groups=groups)
    planes = planes.index_select(3, _reflect_index(w, x.device))
    planes = F.conv2d(planes, kernel.view(1, 1, 1, -1).expand(groups, 1, 1, -1), groups=groups)
    return _ssim_from_moments(*planes.reshape(n, 5, c, h, w).unbind(1))


def _reflect_index(n: int, device: Any) -> Any:
    """Indices of a length-n axis padded by the window radius in scipy's 'reflect' mode (d c b a | a b c d)."""
    import torch

    period = torch.arange(-SSIM_RADIUS, n + SSIM_RADIUS, device=device) % (2 * n)
    return torch.where(period < n, period, 2 * n - 1 - period)


# ---------------------------------------------------------------- input handling
class _Pair:
    """Both images as floats in [0, 1]: numpy (N, H, W, C) on CPU, torch (N, C, H, W) on an accelerator."""

    def __init__(self, a: Any, b: Any, region: Any):
        self.batched = _is_tensor(a) and a.ndim == 4
        self.device = a.device if _is_tensor(a) else None
        self.on_cpu = self.device is None or self.device.type == "cpu"
        convert = _as_numpy if self.on_cpu else _as_torch
        (self.x, x_exact), (self.y, y_exact) = convert(a, "a"), convert(b, "b", self.device)
        self.all_finite = x_exact and y_exact  # uint8 inputs cannot hold NaN/inf: skip that scan
        if self.x.shape != self.y.shape:
            raise ValueError(f"images differ in shape: a is {_nchw(self.x, self.on_cpu)}, b is "
                             f"{_nchw(self.y, self.on_cpu)} (as N, C, H, W)")
        self.x, self.y = _common_dtype(self.x, self.y)
        n, c, h, w = _nchw(self.x, self.on_cpu)
        mask = _region(region, self.on_cpu, self.device)
        if mask.ndim == 4 and mask.shape[1] == 1:
            mask = mask[:, 0]
        if mask.ndim == 2:
            mask = mask[None]
        if tuple(mask.shape) not in ((n, h, w), (1, h, w)):
            raise ValueError(f"region has shape {tuple(mask.shape)}; expected (H, W) = {(h, w)} or "
                             f"(N, H, W) = {(n, h, w)}")
        self.mask = mask[..., None] if self.on_cpu else mask[:, None]  # broadcast over channels
        counts = np.asarray(_to_numpy(mask.reshape(mask.shape[0], -1).sum(1)), dtype=np.float64) * c
        self.count = np.broadcast_to(counts, (n,))

    def region_sum(self, values: Any) -> np.ndarray:
        """Sum of ``values`` over the region's pixels and all channels, per image, as float64 numpy (N,)."""
        n = values.shape[0]
        masked = (values * self.mask).reshape(n, -1)
        if self.on_cpu:
            return masked.sum(1, dtype=np.float64)
        import torch

        return _to_numpy(masked.sum(1, dtype=torch.float64))

    def finish(self, values: np.ndarray) -> Any:
        """NaN where there is nothing to measure; a float for one image, else a float64 tensor (N,)."""
        valid = self.count > 0
        if not self.all_finite:
            n = self.x.shape[0]
            for image in (self.x, self.y):
                finite = image.reshape(n, -1)
                finite = np.isfinite(finite).all(1) if self.on_cpu else _to_numpy(finite.isfinite().all(1))
                valid = valid & finite
        values = np.where(valid, values, np.nan)
        if not self.batched:
            return float(values[0])
        import torch

        return torch.from_numpy(values).to(self.device)


def _is_tensor(value: Any) -> bool:
    return type(value).__module__.startswith("torch") and hasattr(value, "device")


def _to_numpy(tensor: Any) -> np.ndarray:
    return tensor.detach().cpu().numpy() if _is_tensor(tensor) else np.asarray(tensor)


def _common_dtype(x: Any, y: Any) -> tuple[Any, Any]:
    """e.g. float32 (from uint8) vs float64: both in float64."""
    if x.dtype == y.dtype:
        return x, y
    if isinstance(x, np.ndarray):
        wide = np.promote_types(x.dtype, y.dtype)
        return x.astype(wide), y.astype(wide)
    wide = _torch().promote_types(x.dtype, y.dtype)
    return x.to(wide), y.to(wide)


def _nchw(image: Any, channels_last: bool) -> tuple[int, int, int, int]:
    n, *rest = image.shape
    return (n, rest[2], rest[0], rest[1]) if channels_last else (n, *rest)


def _as_numpy(image: Any, name: str, device: Any = None) -> tuple[np.ndarray, bool]:
    """-> (float (N, H, W, C) array in [0, 1], exact) where exact means 'came from uint8'."""
    if _is_tensor(image):
        if image.ndim not in (3, 4):
            raise ValueError(f"{name}: torch images must be (N, C, H, W) or (C, H, W), got {tuple(image.shape)}")
        tensor = image.detach().cpu()
        tensor = tensor[None] if tensor.ndim == 3 else tensor
        if tensor.is_floating_point() and tensor.dtype not in (_torch().float32, _torch().float64):
            tensor = tensor.float()  # float16 / bfloat16 have no numpy twin
        array = tensor.permute(0, 2, 3, 1).numpy()
    else:
        array = np.asarray(image)
        if array.ndim == 2:
            array = array[..., None]
        if array.ndim != 3:
            raise ValueError(f"{name}: numpy images must be (H, W, C) or (H, W), got shape {array.shape}")
        array = array[None]
    if array.dtype == np.uint8:
        return np.multiply(array, np.float32(1 / 255.0), dtype=np.float32), True
    if array.dtype.kind != "f":
        raise ValueError(f"{name}: expected uint8 0..255 or float in [0, 1], got dtype {array.dtype}")
    return _check_range(np.ascontiguousarray(array, dtype=np.promote_types(array.dtype, np.float32)), name), False


def _as_torch(image: Any, name: str, device: Any = None) -> tuple[Any, bool]:
    torch = _torch()
    tensor = image if _is_tensor(image) else torch.as_tensor(np.asarray(image).transpose(2, 0, 1).copy())
    tensor = tensor.detach().to(device)
    tensor = tensor[None] if tensor.ndim == 3 else tensor
    if tensor.ndim != 4:
        raise ValueError(f"{name}: torch images must be (N, C, H, W) or (C, H, W), got {tuple(image.shape)}")
    if tensor.dtype == torch.uint8:
        return tensor.float() / 255.0, True
    if not tensor.is_floating_point():
        raise ValueError(f"{name}: expected uint8 0..255 or float in [0, 1], got dtype {tensor.dtype}")
    return _check_range(tensor.float() if tensor.dtype in (torch.float16, torch.bfloat16) else tensor, name), False


def _check_range(array: Any, name: str) -> Any:
    low, high = float(array.min()), float(array.max())  # NaN: comparisons are False -> a NaN result, not an error
    if low < -1e-6 or high > 1 + 1e-6:
        raise ValueError(f"{name}: float images must lie in [0, 1], got values in [{low:.4g}, {high:.4g}] "
                         "(pass uint8 for 0..255 data)")
    return array


def _region(region: Any, on_cpu: bool, device: Any) -> Any:
    if on_cpu:
        return _to_numpy(region).astype(bool, copy=False)
    torch = _torch()
    return torch.as_tensor(_to_numpy(region) if not _is_tensor(region) else region).to(device).bool()


def _torch():
    import torch

    return torch
