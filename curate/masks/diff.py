"""Pixel-difference edit masks that survive JPEG re-encoding and global photometric jitter.

For a (source, edited) pair of the same size:

1. **Photometric alignment.** Editors (and re-encoders) shift brightness/contrast/gamma of the whole image. Per
   channel we fit a quadratic curve ``edited -> source`` by least squares on a pixel subsample, re-fitting on the
   inliers (pixels the curve explains within ``3 x`` their median residual), starting from pixels that barely
   differ. Outside the edit this cancels the jitter; inside, the edit stays. A correction whose mean size exceeds
   ``max_photometric_shift`` is not jitter but a global edit (e.g. "make it a negative").
2. **Perceptual distance.** Both images are lightly blurred (JPEG noise is high-frequency) and converted to CIELAB;
   the per-pixel distance is CIE76 ΔE with lightness weighted by ``lightness_weight``.
3. **Local normalisation.** JPEG error grows with local texture; ``texture_weight x`` the local standard deviation
   of the source's lightness is subtracted from ΔE, so busy regions need a larger change to count.
4. **Threshold.** Fixed ``threshold`` (ΔE units) or Otsu on the distances (never below ``threshold``).
5. **Morphology** (:mod:`curate.masks.refine`): closing, bounded hole filling, small-component removal.
6. **Whole-image edits.** When the changed fraction reaches ``whole_fraction`` (or the photometric correction is
   too large to be jitter) the mask is the whole image and ``whole=True``: a global edit (style, tone) changes every
   pixel by intent, so its edit region is the whole image, and IoU against a whole-image ground truth is then 1.

Everything is vectorised (numpy + OpenCV over whole images); no per-pixel Python.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field

import numpy as np

from curate.masks import refine
from editkit.metrics import sum_channels
from typing import Annotated
from editkit.config_meta import Range, check_fields


_START_RESIDUAL = 0.15  # fits start from pixels that barely differ: jitter is small, edits mostly are not


@dataclass
class DiffParams:
    """``masks: diff:`` in params.yaml."""

    align: bool = True
    """photometric alignment (robust quadratic curve per channel, or the identity)"""
    align_sample: Annotated[int, Range(ge=1)] = 4096
    """pixels sampled for the fit and the noise estimate"""
    align_iterations: Annotated[int, Range(ge=1)] = 3
    """robust re-fits of the photometric alignment"""
    explained_tolerance: Annotated[float, Range(ge=0, le=1)] = 0.02
    """|residual| (0..1) under which a model "explains" a pixel (model choice)"""
    exact_noise: Annotated[float, Range(ge=0)] = 0.3
    """noise (ΔE) at or below this: a pixel-exact pair, no blur, `exact_threshold`"""
    exact_threshold: Annotated[float, Range(ge=0)] = 1.5
    """ΔE threshold for pixel-exact pairs"""
    blur_sigma: Annotated[float, Range(ge=0)] = 1.0
    """pre-blur (px) against JPEG noise (noisy pairs only); 0 disables"""
    lightness_weight: Annotated[float, Range(ge=0)] = 1.0
    """weight of ΔL in ΔE (chroma weights are 1)"""
    texture_weight: Annotated[float, Range(ge=0)] = 0.6
    """ΔE allowance per unit of local lightness std (local normalisation); 0 disables"""
    texture_sigma: Annotated[float, Range(gt=0)] = 2.0
    """window (px) of that local std"""
    threshold: Annotated[float, Range(ge=0)] = 10.0
    """ΔE threshold for noisy pairs (a floor under noise_factor x noise)"""
    noise_factor: Annotated[float, Range(ge=0)] = 3.0
    """noisy pairs: threshold = max(threshold, noise_factor x median ΔE of unchanged)"""
    weak_ratio: Annotated[float, Range(gt=0, le=1)] = 1.0
    """hysteresis: pixels above weak_ratio x threshold count when connected to a strong one"""
    otsu: bool = False
    """noisy pairs: threshold = max(that, Otsu(ΔE))"""
    max_photometric_shift: Annotated[float, Range(ge=0)] = 0.08
    """mean |correction| (0..1 scale) above this is no jitter: a global edit"""
    max_noise: Annotated[float, Range(ge=0)] = 4.0
    """median ΔE of the "unchanged" pixels above this: everything changed, a global edit"""
    whole_fraction: Annotated[float, Range(gt=0, le=1)] = 0.95
    """changed fraction at or above this: a global edit (the whole image)"""
    refine: refine.RefineParams = field(default_factory=lambda: refine.RefineParams(
        close_px=1, open_px=0, fill_holes=True, max_hole_fraction=0.002, min_component_fraction=0.0002))
    """morphological clean-up of the diff mask"""

    def __post_init__(self) -> None:
        check_fields(self)


@dataclass
class DiffResult:
    mask: np.ndarray  # bool (H, W): pixels that changed (all True when whole)
    whole: bool  # a global edit: the mask is the whole image
    stats: dict[str, float]  # numbers worth keeping in the record's scores


def diff_mask(source: np.ndarray, edited: np.ndarray, params: DiffParams | None = None) -> DiffResult:
    """The edit mask of one pair (HxWx3 uint8 each, same size)."""
    params = params or DiffParams()
    source, edited = _check_pair(source, edited)
    src = np.divide(source, np.float32(255.0), dtype=np.float32)  # = astype(float32) / 255, in one pass
    edt = np.divide(edited, np.float32(255.0), dtype=np.float32)
    alignment = (align_photometry(src, edt, params, levels=edited) if params.align
                 else Alignment.identity(src, edt, params))
    noise = alignment.noise
    exact = noise <= params.exact_noise
    if exact:
        threshold = params.exact_threshold
        distance = perceptual_distance(src, alignment.aligned, params.lightness_weight)
    else:
        threshold = max(params.threshold, params.noise_factor * noise)
        distance = perceptual_distance(src, alignment.aligned, params.lightness_weight, params.blur_sigma,
                                       params.texture_weight, params.texture_sigma)
        if params.otsu:
            threshold = max(threshold, _otsu(distance))
    raw = hysteresis(distance, threshold, params.weak_ratio * threshold)
    changed = float(raw.mean())
    stats = {"diff_changed_fraction": changed, "diff_threshold": float(threshold), "diff_noise": noise,
             "diff_photometric_shift": alignment.shift, "diff_aligned": float(alignment.fitted)}
    h, w = raw.shape
    if changed >= params.whole_fraction or alignment.shift > params.max_photometric_shift or noise > params.max_noise:
        return DiffResult(np.ones((h, w), dtype=bool), True, {**stats, "diff_area": 1.0})
    mask = refine.refine(raw, params.refine)
    area = float(mask.mean())
    if area >= params.whole_fraction:
        return DiffResult(np.ones((h, w), dtype=bool), True, {**stats, "diff_area": 1.0})
    return DiffResult(mask, False, {**stats, "diff_area": area})


@dataclass
class Alignment:
    aligned: np.ndarray  # the edited image in the source's photometry (float HxWx3)
    fitted: bool  # False: the identity explained the pair better than any curve
    shift: float  # mean |aligned - edited| (0..1 scale): how much photometry had to change
    noise: float  # median ΔE between source and aligned over the model's inliers (the unchanged pixels)

    @staticmethod
    def identity(source: np.ndarray, edited: np.ndarray, params: DiffParams) -> "Alignment":
        s, e = _sample(source, edited, params.align_sample)
        return Alignment._identity_of_sample(edited, s, e, np.abs(s - e).max(0), params)

    @staticmethod
    def _identity_of_sample(edited: np.ndarray, s: np.ndarray, e: np.ndarray, residual: np.ndarray,
                            params: DiffParams) -> "Alignment":
        """The identity from an already drawn sample and its |s - e| channel max (align_photometry has both)."""
        inliers = _inliers(residual, params)
        # identical pixels (residual 0: common in lossless pairs) have ΔE exactly 0: convert only the others
        differ = inliers & (residual > 0)
        return Alignment(edited, False, 0.0, _median_delta_e(s[:, differ].T, e[:, differ].T,
                                                             zeros=int(inliers.sum() - differ.sum())))


def _inliers(residual: np.ndarray, params: DiffParams, inliers: np.ndarray | None = None) -> np.ndarray:
    """Pixels a model explains: residual under 3x the inliers' median (iterated), never under the tolerance."""
    inliers = residual < _START_RESIDUAL if inliers is None else inliers
    zero = residual == 0  # residuals are >= 0: exact zeros (identical pixels of lossless pairs) are the smallest
    for _ in range(params.align_iterations):
        count = int(np.count_nonzero(inliers))
        if not count:
            break
        # more than half the inliers at exactly 0: that is the median, no partial sort needed
        median = 0.0 if np.count_nonzero(zero & inliers) > count // 2 else _median(residual[inliers])
        updated = residual <= max(3.0 * median, params.explained_tolerance)
        if np.array_equal(updated, inliers):
            break  # converged: further iterations would repeat this one exactly
        inliers = updated
    return inliers


def align_photometry(source: np.ndarray, edited: np.ndarray, params: DiffParams,
                     levels: np.ndarray | None = None) -> Alignment:
    """Map ``edited`` (float HxWx3 in [0, 1]) onto the source's photometry with a robust per-channel quadratic.

    The curve is fitted on a pixel sample by iterated least squares on the inliers (residual under 3x their
    median), starting from pixels that barely differ. It is kept only if it explains more pixels (residual under
    ``explained_tolerance`` in every channel) than the identity does: a pixel-exact pair stays untouched.

    ``levels``: the uint8 image ``edited`` was made from (``edited == levels / 255``); the curve is then applied as
    a per-channel 256-entry table (the same float32 values, computed once per level instead of once per pixel).
    """
    s, e = _sample(source, edited, params.align_sample)  # (C, K)
    residual = identity_residual = np.abs(s - e).max(0)
    identity_explained = float((residual <= params.explained_tolerance).mean())
    inliers = residual < _START_RESIDUAL
    coefficients = np.tile(np.array([0.0, 1.0, 0.0]), (len(s), 1))
    for _ in range(params.align_iterations):
        if inliers.sum() < 64:
            break  # too few unchanged pixels to fit anything: keep the current curve
        # np.compress keeps rows contiguous (e[:, inliers] would be a strided view: slow sums)
        coefficients = _fit_quadratics(np.compress(inliers, e, axis=1), np.compress(inliers, s, axis=1))
        residual = np.abs(_apply_curve(e, coefficients, axis=0) - s).max(0)
        updated = _inliers(residual, params, inliers)
        if np.array_equal(updated, inliers):
            break  # converged: the next fit would be on the same pixels, giving the same curve
        inliers = updated
    if float((residual <= params.explained_tolerance).mean()) <= identity_explained:
        return Alignment._identity_of_sample(edited, s, e, identity_residual, params)
    h, w, channels = edited.shape
    if levels is not None and levels.dtype == np.uint8 and levels.shape == edited.shape and channels <= 4:
        import cv2

        table = np.divide(np.arange(256, dtype=np.uint8)[:, None].repeat(channels, 1), np.float32(255.0),
                          dtype=np.float32)  # each level as edited holds it
        table = np.clip(_apply_curve(table, coefficients.astype(np.float32)), 0, 1)
        aligned = cv2.LUT(levels, np.ascontiguousarray(table.reshape(1, 256, channels))).reshape(h, w, channels)
    else:
        aligned = _apply_curve(edited.reshape(-1, channels), coefficients.astype(np.float32))
        aligned = np.clip(aligned, 0, 1).reshape(h, w, channels).astype(np.float32)
    shift = float(np.abs(aligned - edited).mean())
    fitted_sample = np.clip(_apply_curve(e, coefficients, axis=0), 0, 1)
    return Alignment(aligned, True, shift, _median_delta_e(s[:, inliers].T, fitted_sample[:, inliers].T))


_MAX_GRAM_CONDITION = 1e6  # above: solve by SVD (lstsq) instead of the normal equations (error ~ condition x eps)


def _median(values: np.ndarray) -> float:
    """np.median of a finite 1-D float array (the same value: the middle element, or the mean of the two middle
    ones), without its generic reduction machinery (~5x cheaper on the few-thousand-value samples here)."""
    n = len(values)
    half = n // 2
    if n % 2:
        return float(np.partition(values, half)[half])
    low, high = np.partition(values, (half - 1, half))[half - 1:half + 1]
    return float((low + high) / 2.0)


_GRAM_INDEX = np.array([[0, 1, 2], [1, 2, 3], [2, 3, 4]])  # gram[i, j] = sum of e^(i+j)


def _fit_quadratics(e: np.ndarray, s: np.ndarray) -> np.ndarray:
    """Least-squares ``s ~ c0 + c1 e + c2 e^2`` per channel of (C, K) samples -> (C, 3) coefficients.

    Solved from the 3x3 normal equations of all channels at once (moments of e up to e^4): ~10x cheaper than one
    SVD-based lstsq per channel and equal to it to ~1e-12 when well conditioned. A badly conditioned system (e.g. a
    channel with only one or two distinct values, where the fit is not unique) falls back to lstsq's minimum-norm
    solution.
    """
    e2 = e * e
    powers = np.stack([np.full(len(e), float(e.shape[1])), e.sum(1), e2.sum(1), (e2 * e).sum(1), (e2 * e2).sum(1)],
                      -1)
    gram = powers[:, _GRAM_INDEX]  # (C, 3, 3): sum of e^(i+j)
    rhs = np.stack([s.sum(1), (s * e).sum(1), (s * e2).sum(1)], -1)  # (C, 3)
    coefficients = np.empty((len(e), 3))
    # the 2-norm condition of a symmetric positive semi-definite matrix is its eigenvalues' ratio (as SVD gives it)
    eigenvalues = np.linalg.eigvalsh(gram)  # ascending
    well = eigenvalues[:, 0] * _MAX_GRAM_CONDITION > eigenvalues[:, -1]
    if well.any():
        coefficients[well] = np.linalg.solve(gram[well], rhs[well][..., None])[..., 0]
    for c in np.flatnonzero(~well):
        design = np.stack([np.ones_like(e[c]), e[c], e2[c]], -1)
        coefficients[c] = np.linalg.lstsq(design, s[c], rcond=None)[0]
    return coefficients


def _sample(source: np.ndarray, edited: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """The same pseudo-random pixel sample of both images (fixed seed: a pair always gives the same mask), as
    float64 (C, K): channels first, so per-channel work and reductions run over long contiguous rows."""
    h, w, channels = source.shape
    pick = _sample_index(h * w, min(size, h * w))
    if h * w <= _TAKE_PIXELS:  # small images: ~2x faster than gathering rows
        return (np.take(source.reshape(-1, channels).T, pick, axis=1).astype(np.float64),
                np.take(edited.reshape(-1, channels).T, pick, axis=1).astype(np.float64))
    # large ones: np.take of the transposed view copies the whole image first (~7x slower at 512 px)
    return (np.ascontiguousarray(source.reshape(-1, channels)[pick].T, dtype=np.float64),
            np.ascontiguousarray(edited.reshape(-1, channels)[pick].T, dtype=np.float64))


_TAKE_PIXELS = 192 * 192  # up to here np.take of the (C, H*W) view is the faster gather


@functools.lru_cache(maxsize=16)
def _sample_index(pixels: int, size: int) -> np.ndarray:
    """Which pixels `_sample` takes; drawn once per image size (a dataset has few sizes), read-only."""
    pick = np.random.default_rng(0).choice(pixels, size=size, replace=False)
    pick.flags.writeable = False
    return pick


def _median_delta_e(source: np.ndarray, edited: np.ndarray, zeros: int = 0) -> float:
    """Median CIE76 ΔE of two (K, 3) float RGB pixel lists plus ``zeros`` pixel pairs known to be identical
    (0.0 when there are none at all)."""
    import cv2

    if len(source) + zeros == 0:
        return 0.0
    distances = np.zeros(len(source) + zeros, dtype=np.float32)
    if len(source):
        lab = [cv2.cvtColor(np.ascontiguousarray(p, np.float32)[None], cv2.COLOR_RGB2Lab)[0] for p in (source, edited)]
        distances[zeros:] = np.sqrt(sum_channels((lab[0] - lab[1]) ** 2))
    return float(np.median(distances))


def perceptual_distance(source: np.ndarray, edited: np.ndarray, lightness_weight: float = 1.0, blur_sigma: float = 0.0,
                        texture_weight: float = 0.0, texture_sigma: float = 2.0) -> np.ndarray:
    """CIE76 ΔE (float32 HxW) between two float RGB images in [0, 1], optionally pre-blurred and locally
    normalised (``texture_weight x`` the local std of the source's lightness is subtracted)."""
    import cv2

    if blur_sigma > 0:
        source = cv2.GaussianBlur(source, (0, 0), blur_sigma, borderType=cv2.BORDER_REFLECT)
        edited = cv2.GaussianBlur(edited, (0, 0), blur_sigma, borderType=cv2.BORDER_REFLECT)
    lab_src = cv2.cvtColor(np.ascontiguousarray(source, np.float32), cv2.COLOR_RGB2Lab)
    lab_edt = cv2.cvtColor(np.ascontiguousarray(edited, np.float32), cv2.COLOR_RGB2Lab)
    delta = lab_src - lab_edt
    if lightness_weight != 1.0:
        delta[..., 0] *= lightness_weight
    distance = np.sqrt(sum_channels(delta * delta))
    if texture_weight > 0:
        distance -= texture_weight * _local_std(lab_src[..., 0], texture_sigma)
        np.maximum(distance, 0, out=distance)
    return distance


def hysteresis(values: np.ndarray, strong: float, weak: float) -> np.ndarray:
    """Pixels above ``weak`` that are 8-connected to a pixel above ``strong`` (plain threshold when weak >= strong).

    Faint parts of a real change (anti-aliased outlines, soft alpha) join it; isolated noise above ``weak`` does not.
    """
    import cv2

    strong_mask = values > strong
    if weak >= strong or not strong_mask.any():
        return strong_mask
    count, labels = cv2.connectedComponents((values > weak).view(np.uint8),
                                            connectivity=8)
    keep = np.zeros(count, dtype=bool)
    keep[np.unique(labels[strong_mask])] = True
    keep[0] = False
    return keep[labels]


def _local_std(image: np.ndarray, sigma: float) -> np.ndarray:
    import cv2

    mean = cv2.GaussianBlur(image, (0, 0), sigma, borderType=cv2.BORDER_REFLECT)
    mean_sq = cv2.GaussianBlur(image * image, (0, 0), sigma, borderType=cv2.BORDER_REFLECT)
    return np.sqrt(np.maximum(mean_sq - mean * mean, 0))


def _apply_curve(values: np.ndarray, coefficients: np.ndarray, axis: int = -1) -> np.ndarray:
    """The per-channel quadratics ((C, 3) coefficients) on ``values`` whose channels lie along ``axis``."""
    c0, c1, c2 = (np.expand_dims(coefficients[:, i], -1) if axis == 0 else coefficients[:, i] for i in range(3))
    return c0 + c1 * values + c2 * values * values


def _otsu(values: np.ndarray) -> float:
    from skimage.filters import threshold_otsu

    if float(values.max()) == float(values.min()):
        return float(values.max())
    return float(threshold_otsu(values))


def _check_pair(source: np.ndarray, edited: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    source, edited = np.asarray(source), np.asarray(edited)
    for name, image in (("source", source), ("edited", edited)):
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"{name} must be an HxWx3 uint8 image, got {image.dtype} {image.shape}")
    if source.shape != edited.shape:
        raise ValueError(f"source {source.shape[:2]} and edited {edited.shape[:2]} differ in size")
    return source, edited
