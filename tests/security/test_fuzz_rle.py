"""Property tests of the mask codecs: COCO RLE (editkit.rle) and Label Studio's brush RLE (annotate.rle).

Random masks round-trip exactly; random or damaged streams decode to a mask of the asked shape or fail with a
ValueError (a clear message), never another exception. Derandomized and small, so CI stays deterministic and fast;
set ``EDITKIT_FUZZ_EXAMPLES`` for a deeper run."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from annotate.rle import mask_to_rle, rle_to_mask
from editkit import rle

FUZZ = settings(derandomize=True, max_examples=int(os.environ.get("EDITKIT_FUZZ_EXAMPLES", 120)), deadline=None,
                database=None, suppress_health_check=[HealthCheck.too_slow])

shapes = st.tuples(st.integers(1, 40), st.integers(1, 40))
masks = shapes.flatmap(lambda shape: arrays(np.bool_, shape))
# Masks with long runs too (a few rectangles on a large canvas): the brush codec splits runs over 65,536 words.
big_masks = st.tuples(st.integers(1, 300), st.integers(1, 300), st.lists(st.tuples(*[st.floats(0, 1)] * 4),
                                                                          max_size=3)).map(
    lambda t: _rectangles(*t))


def _rectangles(height: int, width: int, boxes: list) -> np.ndarray:
    mask = np.zeros((height, width), dtype=bool)
    for y0, x0, y1, x1 in boxes:
        mask[int(min(y0, y1) * height): int(max(y0, y1) * height) + 1,
             int(min(x0, x1) * width): int(max(x0, x1) * width) + 1] = True
    return mask


def _mask_or_value_error(decode, shape):
    try:
        out = decode()
    except ValueError as error:
        assert str(error), "a ValueError without a message"
        return None
    assert isinstance(out, np.ndarray) and out.dtype == bool and out.shape == shape, (out.dtype, out.shape)
    return out


# ------------------------------------------------------------------------------------------------- COCO RLE
@FUZZ
@given(mask=masks | big_masks)
def test_coco_rle_round_trips(mask):
    encoded = rle.encode(mask)
    assert isinstance(encoded["counts"], str) and encoded["size"] == list(mask.shape)
    assert np.array_equal(rle.decode(encoded), mask) and rle.area(encoded) == int(mask.sum())


@FUZZ
@given(shape=st.tuples(st.integers(0, 16), st.integers(0, 16)),
       counts=st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=40) | st.binary(max_size=40))
def random_coco_counts_property(shape, counts):
    _mask_or_value_error(lambda: rle.decode({"size": list(shape), "counts": counts}), shape)


@FUZZ
@given(mask=masks, cut=st.integers(0, 40), junk=st.text(st.characters(min_codepoint=48, max_codepoint=111),
                                                        max_size=4))
def damaged_coco_counts_property(mask, cut, junk):
    encoded = rle.encode(mask)
    counts = encoded["counts"][: cut] + junk + encoded["counts"][cut:]
    _mask_or_value_error(lambda: rle.decode({"size": encoded["size"], "counts": counts}), mask.shape)


MALLOC_DEBUG = Path("/lib/x86_64-linux-gnu/libc_malloc_debug.so.0")


def _in_a_child(name: str) -> None:
    """Run the property ``name`` in a child process: if a string ever reached pycocotools' unchecked parser, heap
    corruption would abort the child, not the test session. With glibc's malloc checks (where the library is there)
    corruption is caught at the next free, not by chance."""
    code = f"from tests.security.test_fuzz_rle import {name}; {name}()"
    root = Path(__file__).resolve().parents[2]
    env = dict(os.environ)
    if MALLOC_DEBUG.is_file():
        env.update(LD_PRELOAD=str(MALLOC_DEBUG), MALLOC_CHECK_="3")
    result = subprocess.run([sys.executable, "-c", code], cwd=root, env=env, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, f"exit code {result.returncode}: {result.stderr[-3000:]}"


@pytest.mark.parametrize("counts", ["P", "0P", "00o", "!", "0 1", "z", "\x7f"])
def test_malformed_coco_counts_never_reach_pycocotools(monkeypatch, counts):
    """Deterministic: a counts string pycocotools cannot parse safely is a ValueError before pycocotools sees it."""
    seen = []
    monkeypatch.setattr(rle.coco_mask, "decode", lambda coco: seen.append(coco) or np.zeros((4, 4, 1), np.uint8))
    monkeypatch.setattr(rle.coco_mask, "area", lambda coco: seen.append(coco) or 0)
    with pytest.raises(ValueError):
        rle.decode({"size": [4, 4], "counts": counts})
    assert not seen


def test_random_coco_counts_decode_to_a_mask_or_a_value_error():
    _in_a_child("random_coco_counts_property")


def test_damaged_coco_counts_decode_to_a_mask_or_a_value_error():
    _in_a_child("damaged_coco_counts_property")


# ------------------------------------------------------------------------------------------ Label Studio brush
@FUZZ
@given(mask=masks | big_masks)
def test_brush_rle_round_trips(mask):
    stream = mask_to_rle(mask)
    assert all(isinstance(b, int) and 0 <= b <= 255 for b in stream)
    assert np.array_equal(rle_to_mask(stream, *mask.shape), mask)
    assert np.array_equal(rle_to_mask(bytes(stream), *mask.shape), mask)


@FUZZ
@given(data=st.lists(st.integers(-300, 600), max_size=64) | st.lists(st.integers(0, 255), min_size=7, max_size=64),
       height=st.integers(0, 8), width=st.integers(0, 8))
def test_random_brush_streams_decode_to_a_mask_or_a_value_error(data, height, width):
    _mask_or_value_error(lambda: rle_to_mask(data, height, width), (height, width))


@FUZZ
@given(data=st.binary(max_size=64), height=st.integers(0, 8), width=st.integers(0, 8))
def test_random_brush_bytes_decode_to_a_mask_or_a_value_error(data, height, width):
    _mask_or_value_error(lambda: rle_to_mask(data, height, width), (height, width))


@FUZZ
@given(mask=masks, position=st.integers(0, 10_000), value=st.integers(0, 255), cut=st.integers(0, 3))
def test_damaged_brush_streams_decode_to_a_mask_or_a_value_error(mask, position, value, cut):
    """A valid stream with one byte changed (header included) and possibly its last bytes cut."""
    stream = mask_to_rle(mask)
    stream[position % len(stream)] = value
    stream = stream[: len(stream) - cut] if cut < len(stream) else stream
    _mask_or_value_error(lambda: rle_to_mask(stream, *mask.shape), mask.shape)


@pytest.mark.parametrize("counts", ["", "0", "1", "2"])
def test_short_coco_counts_are_refused_not_filled_with_uninitialised_memory(counts):
    with pytest.raises(ValueError, match="cover"):
        rle.decode({"size": [64, 64], "counts": counts})
