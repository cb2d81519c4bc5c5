"""Diff masks on constructed pairs (JPEG + photometric jitter, global edits) and the shared morphology ops."""
from __future__ import annotations

import io

import numpy as np
import pytest
from scipy import ndimage
from skimage.morphology import remove_small_objects

from editkit import rle
from curate.masks import refine
from curate.masks.diff import DiffParams, diff_mask, hysteresis
from tests.support.numerics import assert_close


# ---------------------------------------------------------------- refine: exact outputs
def test_disc_and_ops_on_a_constructed_mask():
    assert refine.disc(1).tolist() == [[0, 1, 0], [1, 1, 1], [0, 1, 0]]
    mask = np.zeros((7, 7), bool)
    mask[3, 3] = True
    assert refine.dilate(mask, 1).sum() == 5 and refine.erode(refine.dilate(mask, 1), 1).tolist() == mask.tolist()
    ring = np.zeros((9, 9), bool)
    ring[2:7, 2:7] = True
    ring[4, 4] = False  # a one-pixel hole
    assert refine.fill_holes(ring).sum() == 25
    assert refine.fill_holes(ring, max_hole_pixels=0).sum() == 24  # holes larger than the limit stay
    specks = np.zeros((10, 10), bool)
    specks[0, 0] = True
    specks[5:8, 5:8] = True
    assert refine.remove_small_components(specks, 2).sum() == 9
    full = np.ones((5, 5), bool)
    assert refine.erode(full, 2).all()  # pixels outside the image do not eat in from the border


@pytest.mark.parametrize("seed", range(3))
def test_refine_ops_match_scipy_and_skimage(seed):
    rng = np.random.default_rng(seed)
    mask = ndimage.gaussian_filter(rng.random((60, 70)), 2) > 0.5
    for radius in (1, 2, 3):
        disc = refine.disc(radius).astype(bool)
        assert (refine.dilate(mask, radius) == ndimage.binary_dilation(mask, disc)).all()
        assert (refine.erode(mask, radius) == ndimage.binary_erosion(mask, disc, border_value=1)).all()
    assert (refine.fill_holes(mask) == ndimage.binary_fill_holes(mask)).all()
    expected = remove_small_objects(mask, max_size=29, connectivity=2)  # removes <= 29, i.e. keeps >= 30
    assert (refine.remove_small_components(mask, 30) == expected).all()


def test_hysteresis_keeps_weak_pixels_connected_to_strong_ones():
    values = np.zeros((5, 8))
    values[1, 1:4] = [9, 4, 4]  # strong seed + weak tail
    values[3, 6] = 4  # weak, isolated
    out = hysteresis(values, strong=8, weak=3)
    assert out[1, 1:4].all() and not out[3, 6] and out.sum() == 3


# ---------------------------------------------------------------- diff masks
def _photo(size: int = 192) -> np.ndarray:
    from PIL import Image
    from skimage import data

    return np.asarray(Image.fromarray(data.astronaut()).resize((size, size), Image.Resampling.LANCZOS))


def _degrade(image: np.ndarray, quality: int = 80, brightness=0.03, contrast=1.04, gamma=0.95) -> np.ndarray:
    from PIL import Image

    x = image.astype(np.float32) / 255
    x = np.clip((x - 0.5) * contrast + 0.5 + brightness, 0, 1) ** gamma
    buffer = io.BytesIO()
    Image.fromarray(np.round(x * 255).astype(np.uint8)).save(buffer, format="JPEG", quality=quality)
    return np.asarray(Image.open(buffer).convert("RGB"))


def _local_edit(source: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    h, w = source.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w]
    region = ((yy - 0.6 * h) / (0.15 * h)) ** 2 + ((xx - 0.35 * w) / (0.2 * w)) ** 2 <= 1
    edited = source.copy()
    edited[region] = (30, 200, 60)
    return edited, region


def test_exact_pair_gives_the_changed_pixels():
    source = _photo()
    edited, region = _local_edit(source)
    result = diff_mask(source, edited)
    assert not result.whole and rle.iou(result.mask, region) >= 0.97
    assert result.stats["diff_noise"] <= 0.3
    assert_close(result.stats["diff_area"], result.mask.mean(), accumulations=result.mask.size,
                 why="a float64 mean of the mask's pixels, in another order")


@pytest.mark.parametrize("quality,brightness,gamma", [(75, 0.03, 0.95), (90, -0.04, 1.05)])
def test_jpeg_and_jitter_are_not_edits(quality, brightness, gamma):
    source = _photo()
    edited, region = _local_edit(source)
    degraded = _degrade(edited, quality, brightness, 1.04, gamma)
    naive = np.abs(degraded.astype(int) - source.astype(int)).max(-1) > 8
    assert rle.iou(naive, region) < 0.6  # the naive diff fails on these pairs
    result = diff_mask(source, degraded)
    assert not result.whole and rle.iou(result.mask, region) >= 0.85
    assert result.stats["diff_aligned"] == 1.0 and result.stats["diff_noise"] > 0.3


@pytest.mark.parametrize("style", ["invert", "posterize", "noise"])
def test_global_edits_give_the_whole_image(style):
    source = _photo()
    rng = np.random.default_rng(0)
    if style == "invert":
        edited = 255 - source
    elif style == "posterize":
        edited = (source // 64 * 64 + 32).astype(np.uint8)
    else:
        edited = np.clip(source + rng.normal(0, 40, source.shape), 0, 255).astype(np.uint8)
    result = diff_mask(source, _degrade(edited))
    assert result.whole and result.mask.all()
    assert rle.iou(result.mask, np.ones_like(result.mask)) == 1.0  # how whole-image edits count


def test_identical_pair_gives_an_empty_mask_and_bad_input_raises():
    source = _photo(64)
    result = diff_mask(source, source.copy())
    assert not result.whole and not result.mask.any()
    with pytest.raises(ValueError, match="differ in size"):
        diff_mask(source, source[:32])
    with pytest.raises(ValueError, match="HxWx3 uint8"):
        diff_mask(source.astype(np.float32), source)
    with pytest.raises(ValueError, match="whole_fraction"):
        DiffParams(whole_fraction=0)
