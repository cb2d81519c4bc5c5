"""editkit.rle checks a COCO counts string before pycocotools parses it: the run lengths it reads equal the runs
of the mask counted with numpy (an independent reference), and anything pycocotools would misread is refused."""
from __future__ import annotations

import numpy as np
import pytest

from editkit import rle


def _numpy_runs(mask: np.ndarray) -> list[int]:
    """Alternating 0/1 run lengths of the column-major flattened mask, starting with a (possibly empty) 0-run."""
    flat = mask.flatten(order="F").astype(np.int8)
    bounds = np.concatenate(([0], np.flatnonzero(np.diff(flat)) + 1, [flat.size]))
    runs = np.diff(bounds).tolist()
    return [0, *runs] if flat.size and flat[0] == 1 else runs


@pytest.mark.parametrize("seed", range(40))
def test_run_lengths_equal_the_masks_runs(seed):
    rng = np.random.default_rng(seed)
    height, width = (int(v) for v in rng.integers(1, 80, 2))
    mask = rng.random((height, width)) < rng.random()
    if seed % 4 == 0:  # long runs: numbers of several characters and large differences between them
        mask = np.zeros((height * 9, width * 9), dtype=bool)
        mask[: height * 4, width: width * 5] = True
    encoded = rle.encode(mask)
    assert rle.run_lengths(encoded["counts"]).tolist() == _numpy_runs(mask)
    assert np.array_equal(rle.decode(encoded), mask) and rle.area(encoded) == int(mask.sum())


@pytest.mark.parametrize("counts, message", [
    ("P", "middle of a number"),  # pycocotools reads past the end of the string
    ("00o", "middle of a number"),
    ("0 1", "characters"),
    ("\x7f", "characters"),
    ("", "cover 0 pixels"),  # pycocotools leaves the rest of the mask uninitialised
    ("2", "cover 2 pixels"),
    ("0O", "negative run"),  # a negative run writes outside the mask
    ("0" + "P" * 8 + "0", "longer than"),
])
def test_malformed_counts_are_a_value_error(counts, message):
    with pytest.raises(ValueError, match=message):
        rle.decode({"size": [4, 4], "counts": counts})


@pytest.mark.parametrize("size", [[4], [4, "x"], [-1, 4], [1 << 16, 1 << 16], None])
def test_bad_sizes_are_a_value_error(size):
    with pytest.raises(ValueError):
        rle.decode({"size": size, "counts": "0"})


def test_sizes_as_numpy_integers_are_accepted():
    encoded = rle.encode(np.ones((2, 3), dtype=bool))
    assert rle.decode({"size": np.array([2, 3]), "counts": encoded["counts"]}).all()
