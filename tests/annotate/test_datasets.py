"""One project + reviews file per dataset; overlay colour against the images."""
from __future__ import annotations

import numpy as np
import pytest

from annotate import datasets, overlay
from annotate.settings import AnnotateParams
from tests.support.numerics import assert_close


def test_configured_records_keep_the_configured_names():
    p = AnnotateParams()
    ds = datasets.resolve(p)
    assert (ds.records, ds.images, ds.reviews, ds.project_title) == (p.records, p.images, p.reviews, p.project_title)
    assert (ds.out, ds.metrics) == (p.out, p.metrics)


def test_benchmark_records_get_their_own_project_reviews_images_and_outputs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data/bench/gedit/records").mkdir(parents=True)
    (tmp_path / "data/bench/gedit/images").mkdir()
    ds = datasets.resolve(AnnotateParams(), "data/bench/gedit/records")
    assert ds.name == "bench_gedit" and ds.images == "data/bench/gedit/images"
    assert ds.reviews == "reviews/bench_gedit.json" and ds.project_title == "editkit mask review: bench_gedit"
    # what the DVC stage bench_gedit_review passes explicitly
    assert ds.out == "data/bench/gedit_reviewed/records" and ds.metrics == "metrics/bench_gedit_review.json"
    other = datasets.resolve(AnnotateParams(), "data/bench/gedit/records", images="x", reviews="r.json", project="P")
    assert (other.images, other.reviews, other.project_title) == ("x", "r.json", "P")
    with pytest.raises(ValueError, match="empty"):
        datasets.resolve(AnnotateParams(), project=" ")


def test_dataset_names_are_plain_file_names():
    assert datasets.dataset_name("data/masks/records") == "masks"
    assert datasets.dataset_name("../x y/records") == "___x_y"
    assert "/" not in datasets.dataset_name("/abs/path/records")


def test_overlay_avoids_the_images_colours():
    red = np.zeros((32, 32, 3), dtype=np.uint8)
    red[..., 0] = 230
    red[..., 2] = 90  # pinkish red: the old fixed overlay would vanish on it
    chosen = overlay.choose([red])
    assert chosen != "#ff0066"
    assert overlay.contrast(chosen, red.reshape(-1, 3)) > overlay.contrast("#ff0066", red.reshape(-1, 3))
    cyan = np.zeros((16, 16, 3), dtype=np.uint8)
    cyan[..., 1:] = 229
    assert overlay.choose([cyan]) != "#00e5ff"
    assert overlay.choose([]) == overlay.PALETTE[0]


def test_contrast_is_cie76_in_lab():
    from skimage.color import deltaE_cie76, rgb2lab

    pixels = np.random.default_rng(0).integers(0, 256, (200, 3), dtype=np.uint8)
    reference = deltaE_cie76(rgb2lab(pixels[None] / 255.0)[0], rgb2lab(np.array([[[0, 229, 255]]]) / 255.0)[0, 0])
    assert_close(overlay.contrast("#00e5ff", pixels, quantile=0.5), np.quantile(reference, 0.5), accumulations=32,
                 growth="linear", why="float64 sRGB -> XYZ -> Lab (3-term sums, cube roots) and a distance, "
                                      "vs scikit-image's")
