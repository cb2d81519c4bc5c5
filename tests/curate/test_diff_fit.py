"""Fast paths of the diff masks and metrics agree with the straightforward computations they replace."""
from __future__ import annotations

import numpy as np
import pytest

from curate.masks.diff import DiffParams, _fit_quadratics, _inliers, _sample_index
from tests.support.numerics import assert_close


def _lstsq_per_channel(e: np.ndarray, s: np.ndarray) -> np.ndarray:
    return np.array([np.linalg.lstsq(np.stack([np.ones_like(e[:, c]), e[:, c], e[:, c] ** 2], -1), s[:, c],
                                     rcond=None)[0] for c in range(e.shape[1])])


@pytest.mark.parametrize("seed", range(4))
def test_normal_equation_fit_matches_lstsq_on_random_curves(seed):
    rng = np.random.default_rng(seed)
    e = rng.random((rng.integers(100, 5000), 3)) * rng.uniform(0.2, 1.0)  # narrow ranges are worse conditioned
    truth = rng.normal(size=(3, 3)) * [0.05, 1, 0.3]
    s = truth[:, 0] + truth[:, 1] * e + truth[:, 2] * e * e + rng.normal(scale=0.01, size=e.shape)
    fitted, reference = _fit_quadratics(e.T.copy(), s.T.copy()), _lstsq_per_channel(e, s)
    assert_close(fitted, reference, atol=1e-9,
                 why="not a rounding bound: the normal equations square the condition number of a narrow-range "
                     "quadratic fit (kappa^2 eps ~ 1e-10), which lstsq's SVD does not")
    # what the mask depends on: the fitted values at the sample
    curve = lambda c: c[:, 0] + c[:, 1] * e + c[:, 2] * e * e  # noqa: E731
    assert_close(curve(fitted), curve(reference), accumulations=3 * 3, growth="linear",
                 why="the fitted values are well conditioned: 3 terms of products, float64")


def test_degenerate_channels_fall_back_to_the_minimum_norm_solution():
    rng = np.random.default_rng(0)
    e = rng.random((500, 3))
    e[:, 0] = 0.4  # one distinct value: any curve through (0.4, mean) fits
    e[:, 1] = np.where(np.arange(500) % 2, 0.2, 0.7)  # two distinct values: the quadratic is not unique
    s = 0.1 + 0.8 * e + rng.normal(scale=0.01, size=e.shape)
    assert_close(_fit_quadratics(e.T.copy(), s.T.copy()), _lstsq_per_channel(e, s), dtype=np.float64,
                 accumulations=500, growth="linear",
                 why="float64 normal equations over 500 samples vs numpy's lstsq (SVD): another algorithm")


def test_sample_index_is_drawn_once():
    pick = _sample_index(5000, 300)
    assert np.array_equal(pick, np.random.default_rng(0).choice(5000, size=300, replace=False))
    assert _sample_index(5000, 300) is pick and not pick.flags.writeable  # cached, so nobody may modify it


def test_inliers_stop_early_only_when_converged():
    def iterated(residual, params, inliers):  # the loop without the early exit
        for _ in range(params.align_iterations):
            if not inliers.any():
                break
            inliers = residual <= max(3.0 * float(np.median(residual[inliers])), params.explained_tolerance)
        return inliers

    rng = np.random.default_rng(2)
    for iterations in (1, 3, 8):
        params = DiffParams(align_iterations=iterations)
        for _ in range(20):
            residual = np.abs(rng.standard_cauchy(2000)) * rng.uniform(0.001, 0.1)
            residual[rng.random(2000) < rng.uniform(0, 0.9)] = 0  # identical pixels: the median is often 0
            start = residual < rng.uniform(0.01, 0.5)
            assert np.array_equal(_inliers(residual, params, start), iterated(residual, params, start))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sum_channels_is_bit_identical_to_numpy_sum(dtype):
    from editkit.metrics import sum_channels

    rng = np.random.default_rng(4)
    for shape in ((50_000, 3), (64, 48, 3), (1000, 1), (300, 4)):
        values = (rng.random(shape) * rng.choice([1e-4, 1.0, 1e4], shape)).astype(dtype)
        assert np.array_equal(sum_channels(values), values.sum(-1))


def test_median_delta_e_skipping_identical_pixels_is_exact():
    from curate.masks.diff import _median_delta_e

    rng = np.random.default_rng(6)
    for size in (1, 2, 101, 5000):
        source = rng.random((size, 3))
        edited = np.clip(source + rng.normal(scale=0.05, size=source.shape), 0, 1)
        same = rng.random(size) < 0.6
        edited[same] = source[same]
        full = _median_delta_e(source, edited)
        assert _median_delta_e(source[~same], edited[~same], zeros=int(same.sum())) == full
    assert _median_delta_e(np.zeros((0, 3)), np.zeros((0, 3))) == 0.0
    assert _median_delta_e(np.zeros((0, 3)), np.zeros((0, 3)), zeros=5) == 0.0
