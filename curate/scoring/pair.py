"""Pixel scores of an edit pair: mask geometry, background consistency (PSNR/SSIM outside the mask), pHashes.

``score_pairs(records, images)`` is a stateless batch -> batch function (see the contract in
:mod:`curate.scoring`). Background scores measure the NON-edited region (``~mask``): a consistent pair changes
nothing there. Whole-image edits have no such region; they get no background score (the select filters treat a
missing score as "not applicable", never as a failure).
"""
from __future__ import annotations

import math
from typing import Any, Optional

import numpy as np

from editkit import rle, schema
from editkit.needs import Needs
from editkit.scores import BG_PSNR, BG_SSIM, MASK_AREA, MASK_COMPACTNESS, MASK_COMPONENTS
from curate.scoring import phash

STAGE = "score"
# Identical pixels give infinite PSNR; cap so the value stays a finite, comparable number (Parquet, JSON, means).
PSNR_CAP_DB = 100.0


def mask_geometry(mask: np.ndarray) -> dict[str, float]:
    """Area fraction, number of 8-connected components and isoperimetric compactness of a boolean mask."""
    import cv2

    mask = np.ascontiguousarray(mask, dtype=bool)
    area = int(mask.sum())
    components = cv2.connectedComponents(mask.view(np.uint8), connectivity=8)[0] - 1  # label 0: the background
    scores = {MASK_AREA: area / mask.size, MASK_COMPONENTS: float(components)}
    if area:
        edge = perimeter(mask)
        # 4*pi*A/P^2 is 1 for a disc and falls toward 0 for ragged or scattered masks.
        scores[MASK_COMPACTNESS] = float(min(1.0, 4.0 * math.pi * area / edge**2)) if edge > 0 else 1.0
    return scores


# skimage.measure.perimeter(neighborhood=4): each border pixel's 3x3 neighbourhood code -> a length contribution
_PERIMETER_WEIGHTS = np.zeros(50)
_PERIMETER_WEIGHTS[[5, 7, 15, 17, 25, 27]] = 1
_PERIMETER_WEIGHTS[[21, 33]] = math.sqrt(2)
_PERIMETER_WEIGHTS[[13, 23]] = (1 + math.sqrt(2)) / 2
_PERIMETER_CODES = np.array([[10, 2, 10], [2, 1, 2], [10, 2, 10]], dtype=np.float32)
_CROSS = np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]], dtype=np.uint8)


def perimeter(mask: np.ndarray) -> float:
    """skimage.measure.perimeter(mask, neighborhood=4), the same algorithm on OpenCV filters: equal to it, ~5x
    faster, and the score stage need not import skimage.measure (~0.4 s)."""
    import cv2

    pixels = np.ascontiguousarray(mask, dtype=bool).view(np.uint8)
    # pixels outside the image count as background (skimage: border_value=0 / mode='constant', cval=0)
    eroded = cv2.erode(pixels, _CROSS, borderType=cv2.BORDER_CONSTANT, borderValue=0)
    codes = cv2.filter2D(pixels - eroded, -1, _PERIMETER_CODES, borderType=cv2.BORDER_CONSTANT)  # symmetric kernel
    return float(np.bincount(codes.ravel(), minlength=50) @ _PERIMETER_WEIGHTS)


def background_consistency(source: np.ndarray, edited: np.ndarray, mask: np.ndarray,
                           rounded: bool = True) -> dict[str, float]:
    """Masked PSNR and SSIM of the pair over the NON-edited region; {} when the mask covers everything.

    For uint8 pairs (what the stage scores): PSNR from exact integer sums, SSIM from :func:`masked_ssim_rounded`
    stored to :data:`SSIM_DECIMALS` decimals (see there), or in full float64 precision with ``rounded=False`` (the
    benchmarks' metric, where models are compared by small differences); other inputs go through
    :mod:`editkit.metrics` in float64."""
    from editkit.metrics import masked_psnr, masked_ssim

    region = ~np.asarray(mask, dtype=bool)
    if not region.any():
        return {}
    if source.dtype == np.uint8 and edited.dtype == np.uint8 and source.ndim == 3:
        psnr = _masked_psnr_uint8(source, edited, region)  # exact integer sums: the same value, ~10x cheaper
        ssim = masked_ssim_rounded(source, edited, region) if rounded else _masked_ssim_float64(source, edited, region)
    else:
        psnr = float(masked_psnr(_unit_float64(source), _unit_float64(edited), region))
        ssim = float(masked_ssim(_unit_float64(source), _unit_float64(edited), region))
    return {BG_PSNR: min(psnr, PSNR_CAP_DB) if not math.isnan(psnr) else psnr, BG_SSIM: ssim}


def _masked_psnr_uint8(source: np.ndarray, edited: np.ndarray, region: np.ndarray) -> float:
    """editkit.metrics.masked_psnr of two HxWxC uint8 images on [0, 1] over ``region``, from the exact integer sum
    of squared differences (OpenCV's L2SQR norm of 8-bit data sums integers: the float64 path's value to ~1e-15)."""
    import cv2

    total = cv2.norm(source, edited, cv2.NORM_L2SQR, mask=region.view(np.uint8))
    count = int(np.count_nonzero(region)) * source.shape[-1]
    if total == 0:
        return math.inf
    return 10.0 * math.log10(count * 255.0 * 255.0 / total)


# bg_ssim is stored to this many decimals (4: 1e-4 steps, finer than any threshold select uses)
SSIM_DECIMALS = 4
# |float32 SSIM - float64 SSIM| stays below this (measured: <= 1.4e-6 on photos and JPEG pairs, 3.4e-6 on a
# saturated black/white checkerboard; tests/curate/test_score.py): a float32 value farther than this from a rounding
# boundary rounds as the float64 value does, on any CPU
_SSIM32_ERROR = 5e-6
_SSIM_RADIUS = 5  # editkit.metrics.SSIM_RADIUS: 11 taps


def masked_ssim_rounded(source: np.ndarray, edited: np.ndarray, region: np.ndarray) -> float:
    """editkit.metrics.masked_ssim of two uint8 images (data range 255) rounded to :data:`SSIM_DECIMALS` decimals,
    the same on every machine, computed in float32 (~3x faster than float64).

    float32 sums differ between OpenCV's SIMD kernels (by ~1e-7 relative), so a float32 SSIM is not the same number
    on every CPU; rounded to 4 decimals it is, unless it lies within :data:`_SSIM32_ERROR` of a rounding boundary:
    then (a few % of pairs) the float64 SSIM, which every CPU computes alike to ~1e-13, decides the rounding. Either
    way the stored value is the float64 SSIM correctly rounded."""
    from editkit.metrics import masked_ssim

    h, w = region.shape
    if min(h, w) <= 2 * _SSIM_RADIUS or not 1 <= source.shape[2] <= 4:  # tiny, or more channels than cv2.mean takes
        return round(float(masked_ssim(_unit_float64(source), _unit_float64(edited), region)), SSIM_DECIMALS)
    value = masked_ssim_mean(source, edited, region, np.float32)
    step = 10.0 ** -SSIM_DECIMALS
    if abs(value / step - math.floor(value / step) - 0.5) * step < _SSIM32_ERROR:  # too close to call in float32
        value = masked_ssim_mean(source, edited, region, np.float64)
    return round(value, SSIM_DECIMALS)


def _masked_ssim_float64(source: np.ndarray, edited: np.ndarray, region: np.ndarray) -> float:
    """editkit.metrics.masked_ssim of two uint8 images in float64, unrounded."""
    from editkit.metrics import masked_ssim

    h, w = region.shape
    if min(h, w) <= 2 * _SSIM_RADIUS or not 1 <= source.shape[2] <= 4:
        return float(masked_ssim(_unit_float64(source), _unit_float64(edited), region))
    return masked_ssim_mean(source, edited, region, np.float64)


_SSIM_BAND = 64  # rows per band: a band's planes stay in cache through the formula (~25% faster at 512 px)


def masked_ssim_mean(source: np.ndarray, edited: np.ndarray, region: np.ndarray, dtype: type = np.float32) -> float:
    """Mean of skimage's Gaussian SSIM map (sigma 1.5, data range 255, population covariance) of two HxWxC uint8
    images (H and W > 10, C <= 4) over ``region`` (H, W), computed in ``dtype`` (float64: editkit.metrics.masked_ssim
    to ~1e-13).

    Values are centred on the source's mean (the variances' cancellation then loses less); the moments x, y,
    x^2 + y^2 (only the variances' sum enters the formula) and xy of all channels are blurred by one OpenCV call per
    band of :data:`_SSIM_BAND` rows (with 5 rows either side from the image, mirrored at its edges as scipy's
    'reflect'; the planes are stacked, and their outer rows, which see each other, are dropped), the formula runs in
    place, and each band's region sum is taken in double. Bands without region pixels are skipped."""
    import cv2

    from editkit.metrics import _gaussian_kernel

    h, w, c = source.shape
    r = _SSIM_RADIUS
    centre = dtype(round(cv2.mean(source)[0]))  # any constant: SSIM is shift-invariant but for the means
    kernel = _gaussian_kernel().astype(dtype)
    c1, c2 = dtype((0.01 * 255) ** 2), dtype((0.03 * 255) ** 2)
    padded = np.arange(-r, h + r)  # the source row of each row of the mirrored image ("fedcba|abcdef")
    padded = np.where(padded < 0, -padded - 1, np.where(padded >= h, 2 * h - padded - 1, padded))
    counts = np.count_nonzero(region, axis=1)
    total = 0.0
    for top in range(0, h, _SSIM_BAND):
        bottom = min(h, top + _SSIM_BAND)
        count = int(counts[top:bottom].sum())
        if not count:
            continue
        rows = padded[top:bottom + 2 * r]
        n = len(rows)
        planes = np.empty((4, n, w, c), dtype)
        x, y, squares = planes[0], planes[1], planes[2]
        np.subtract(source[rows], centre, out=x, dtype=dtype)
        np.subtract(edited[rows], centre, out=y, dtype=dtype)
        np.multiply(x, x, out=squares)  # products and sums of integers < 2^24: exact
        squares += y * y
        np.multiply(x, y, out=planes[3])
        blurred = cv2.sepFilter2D(planes.reshape(4 * n, w, c), -1, kernel, kernel, borderType=cv2.BORDER_REFLECT)
        ux, uy, usq, uxy = blurred.reshape(planes.shape)[:, r:n - r]
        uxy -= ux * uy  # covariance
        usq -= ux * ux  # the variances' sum
        usq -= uy * uy
        usq += c2  # B2 = vx + vy + C2
        uxy *= 2
        uxy += c2  # A2 = 2 vxy + C2
        ux += centre  # the means themselves
        uy += centre
        numerator = ux * uy
        numerator *= 2
        numerator += c1  # A1 = 2 ux uy + C1
        numerator *= uxy
        ux *= ux
        uy *= uy
        ux += uy
        ux += c1  # B1 = ux^2 + uy^2 + C1
        ux *= usq
        numerator /= ux
        means = cv2.mean(numerator, mask=region[top:bottom].view(np.uint8))  # per channel, summed in double
        total += sum(means[:c]) * count
    return total / (int(counts.sum()) * c)


def _unit_float64(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    return image / 255.0 if image.dtype == np.uint8 else image.astype(np.float64)


def score_pair(record: dict[str, Any], source: np.ndarray, edited: np.ndarray) -> dict[str, Any]:
    """Score one decoded pair in place; rejects (with a reason) when sizes or mask do not fit."""
    if source.shape != edited.shape:
        return schema.reject(record, STAGE, f"source {source.shape[:2]} and edited {edited.shape[:2]} sizes differ")
    if record.get("mask") is None:
        return schema.reject(record, STAGE, "no edit mask (the masks stage set none)")
    mask = rle.decode(record["mask"])
    if mask.shape != source.shape[:2]:
        return schema.reject(record, STAGE, f"mask size {mask.shape} does not match the image {source.shape[:2]}")
    scores = dict(record.get("scores") or {})
    scores.update(mask_geometry(mask))
    values = background_consistency(source, edited, mask)
    if any(math.isnan(v) for v in values.values()):
        return schema.reject(record, STAGE, "background PSNR/SSIM is NaN")
    scores.update(values)
    record["scores"] = scores
    record["phash"] = phash.pair_hashes(source, edited)
    return record


# the record fields the pixel scores read (editkit.needs)
NEEDS = Needs(("id", "status", "has_edited", "mask", "scores"))


def score_pairs(records: list[dict[str, Any]], images: Optional[Any], workers: int = 0,
                pool: Any = None) -> list[dict[str, Any]]:
    """Batch -> batch: pixel scores for every ok record that has an edited image; others pass through.

    Records are independent: they are scored on ``workers`` processes (0: one per CPU core; see
    editkit.executors.RecordPool; ``pool``: one the caller keeps open across shards, then ``workers`` is unused)."""
    from editkit.executors import RecordPool

    if images is None:
        raise ValueError("score_pairs needs the batch's images (an ImageShard), got None")
    own = pool is None
    pool = RecordPool(workers) if own else pool
    try:
        pool.map(_score_record, records, images)
    finally:
        if own:
            pool.close()
    return records


def _score_record(record: dict[str, Any], images: Any) -> None:
    if not schema.is_ok(record) or record.get("has_edited") is False:
        return
    if record["id"] not in images:
        schema.reject(record, STAGE, "images missing from the image shard")
        return
    from curate.images import decode_pair

    try:
        source, edited = decode_pair(images, record["id"])  # each image decoded once
    except Exception as error:  # ingest validated them; a failure here means the shard was damaged since
        schema.reject(record, STAGE, f"cannot decode image: {type(error).__name__}: {error}")
        return
    if edited is None:
        schema.reject(record, STAGE, "edited image missing")
        return
    score_pair(record, source, edited)

