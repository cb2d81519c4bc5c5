"""mask_geometry's OpenCV paths equal the scikit-image / scipy functions they replace."""
from __future__ import annotations

import numpy as np


def test_perimeter_equals_skimage_and_components_equal_scipy():
    from scipy import ndimage
    from skimage.measure import perimeter as skimage_perimeter

    from curate.scoring.pair import mask_geometry, perimeter

    rng = np.random.default_rng(3)
    masks = [np.ones((5, 7), bool), np.zeros((6, 6), bool), np.eye(9, dtype=bool)]
    for _ in range(30):
        shape = tuple(rng.integers(1, 90, 2))
        masks.append(ndimage.gaussian_filter(rng.random(shape), rng.uniform(0, 3)) > rng.uniform(0.3, 0.7))
        masks.append(rng.random(shape) > 0.6)
    for mask in masks:
        assert perimeter(mask) == skimage_perimeter(mask, neighborhood=4)
        components = ndimage.label(mask, structure=np.ones((3, 3), bool))[1]
        assert mask_geometry(mask)["mask_components"] == components
        assert mask_geometry(mask[:, ::-1])["mask_components"] == components  # a non-contiguous view
