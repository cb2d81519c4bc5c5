"""Canonical mask storage: COCO compressed RLE (pycocotools), ``{"size": [h, w], "counts": str}``.

Label Studio's brush RLE is a different format (an RLE over the RGBA buffer); it is converted only at push/pull time
in :mod:`annotate.rle`.
"""
from __future__ import annotations

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
    """COCO compressed RLE -> boolean HxW array."""
    if rle is None:
        raise ValueError("cannot decode a missing mask (None)")
    counts = rle["counts"]
    coco = {"size": [int(rle["size"][0]), int(rle["size"][1])],
            "counts": counts.encode("ascii") if isinstance(counts, str) else counts}
    return coco_mask.decode(coco).astype(bool)


def area(rle: dict[str, Any]) -> int:
    counts = rle["counts"]
    coco = {"size": list(rle["size"]), "counts": counts.encode("ascii") if isinstance(counts, str) else counts}
    return int(coco_mask.area(coco))


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
