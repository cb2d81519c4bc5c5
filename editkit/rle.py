"""Canonical mask storage: COCO compressed RLE (pycocotools), ``{"size": [h, w], "counts": str}``.

Label Studio's brush RLE is a different format (an RLE over the RGBA buffer); it is converted only at push/pull time
in :mod:`annotate.rle`.
"""
from __future__ import annotations

import operator
from typing import Any

import numpy as np
from pycocotools import mask as coco_mask


def encode(mask: np.ndarray) -> dict[str, Any]:
    """Boolean/0-1 HxW mask -> COCO compressed RLE with ``counts`` as a str (JSON/Arrow friendly)."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"mask must be 2-D (H, W), got shape {mask.shape}")
    rle = coco_mask.encode(np.asfortranarray(mask.astype(bool).astype(np.uint8)))
    counts = rle["counts"]
    return {"size": [int(rle["size"][0]), int(rle["size"][1])],
            "counts": counts.decode("ascii") if isinstance(counts, bytes) else counts}


def decode(rle: dict[str, Any]) -> np.ndarray:
    """COCO compressed RLE -> boolean HxW array; a malformed one is a ValueError (see :func:`run_lengths`)."""
    coco, _ = _checked(rle)
    return coco_mask.decode(coco).astype(bool)


def area(rle: dict[str, Any]) -> int:
    _, runs = _checked(rle)
    return int(runs[1::2].sum())


# pycocotools parses counts in C without bounds checks: a string whose last character continues a number is read
# past its end, negative runs write outside the mask, and runs that cover fewer pixels than the size leave the rest
# uninitialised. Masks come from datasets and review servers, so every string is checked here first.
MAX_PIXELS = 1 << 30
_MAX_DIGITS = 7  # 5 bits a character: 35 bits hold any run of a mask under MAX_PIXELS


def run_lengths(counts: str | bytes) -> np.ndarray:
    """The run lengths a COCO compressed ``counts`` string encodes (alternating 0-runs and 1-runs, column-major).

    Each number is written in 5-bit groups, least significant first, as characters ``'0' + group``; bit 0x20 marks
    that the number goes on, bit 0x10 of its last group is the sign; from the third number on, each is stored as
    the difference to the number two places before it. Raises ValueError on anything else."""
    if isinstance(counts, str):
        if not counts.isascii():
            raise ValueError("RLE counts must be ASCII characters '0'..'o'")
        counts = counts.encode("ascii")
    if not isinstance(counts, (bytes, bytearray)):
        raise ValueError(f"RLE counts must be a compressed string, got {type(counts).__name__}")
    if not counts:
        return np.zeros(0, dtype=np.int64)
    groups = np.frombuffer(bytes(counts), dtype=np.uint8).astype(np.int64) - 48
    if ((groups < 0) | (groups > 63)).any():
        raise ValueError("RLE counts must be characters '0'..'o'")
    goes_on = (groups & 0x20) != 0
    if goes_on[-1]:
        raise ValueError("RLE counts end in the middle of a number")
    ends = np.flatnonzero(~goes_on)
    starts = np.concatenate(([0], ends[:-1] + 1))
    digits = ends - starts + 1
    if digits.max() > _MAX_DIGITS:
        raise ValueError(f"RLE counts hold a number longer than {_MAX_DIGITS} characters")
    number = np.repeat(np.arange(len(ends)), digits)
    shift = 5 * (np.arange(len(groups)) - np.repeat(starts, digits))
    values = np.zeros(len(ends), dtype=np.int64)
    np.add.at(values, number, (groups & 0x1F) << shift)
    negative = (groups[ends] & 0x10) != 0
    values[negative] -= np.left_shift(1, 5 * digits[negative])
    runs = values.copy()
    runs[2::2] = np.cumsum(values[2::2])  # each even run from the third on: a difference to the one before
    runs[3::2] = values[1] + np.cumsum(values[3::2]) if len(values) > 3 else runs[3::2]
    return runs


def _checked(rle: dict[str, Any]) -> tuple[dict[str, Any], np.ndarray]:
    if rle is None:
        raise ValueError("cannot decode a missing mask (None)")
    if not isinstance(rle, dict) or "size" not in rle or "counts" not in rle:
        raise ValueError("an RLE mask is a mapping with 'size' and 'counts'")
    try:
        height, width = (operator.index(value) for value in rle["size"])
    except (TypeError, ValueError):
        raise ValueError(f"RLE size must be [height, width] integers, got {str(rle['size'])[:40]}") from None
    if height < 0 or width < 0 or height * width > MAX_PIXELS:
        raise ValueError(f"RLE size {height}x{width} is negative or over {MAX_PIXELS} pixels")
    counts = rle["counts"]
    runs = run_lengths(counts)
    if (runs < 0).any():
        raise ValueError("RLE counts hold a negative run")
    if int(runs.sum()) != height * width:
        raise ValueError(f"RLE runs cover {int(runs.sum())} pixels, the size {height}x{width} has {height * width}")
    coco = {"size": [height, width], "counts": counts.encode("ascii") if isinstance(counts, str) else bytes(counts)}
    return coco, runs


def full(height: int, width: int, value: bool = True) -> dict[str, Any]:
    return encode(np.full((height, width), value, dtype=bool))


def iou(a: np.ndarray, b: np.ndarray, empty_value: float = 1.0) -> float:
    """IoU of two boolean masks; two empty masks agree perfectly (``empty_value``)."""
    a = np.asarray(a, dtype=bool)
    b = np.asarray(b, dtype=bool)
    union = np.logical_or(a, b).sum()
    if union == 0:
        return float(empty_value)
    return float(np.logical_and(a, b).sum() / union)
