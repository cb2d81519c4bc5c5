"""Per-edit-type dilation of the final edit mask (``masks.dilate: {replace: 8, action: 8}``, radius in pixels).

Generative edits such as replacing an object or changing a pose produce a result whose outline differs from the
source object's: a mask that hugs either outline leaves no room for the new shape. CoCoEdit dilated the masks of
such edits; here any edit type of :mod:`editkit.taxonomy` can get a radius. The mask is dilated by a disc (the
shared :func:`curate.masks.refine.dilate`), after the diff and grounded steps, so it applies to the mask the
record keeps. Masks supplied with the data (``gt``, ``human``), whole-image masks and empty masks are left alone.
The radius used is recorded in ``scores["mask_dilate_px"]``; ``diff_gt_iou`` stays that of the undilated diff mask.
"""
from __future__ import annotations

from typing import Any

from editkit import rle, schema, taxonomy
from editkit.errors import ConfigError

SCORE = "mask_dilate_px"
UNTOUCHED_SOURCES = ("gt", "human", "whole", "none", None)


def check_dilate(dilate: Any) -> dict[str, int]:
    """``masks.dilate`` validated: edit type names of the taxonomy -> radius (int >= 0)."""
    if dilate is None:
        return {}
    if not isinstance(dilate, dict):
        raise ConfigError(f"masks.dilate must map edit types to a radius in pixels (e.g. {{replace: 8}}), "
                          f"got {dilate!r}")
    unknown = sorted(set(dilate) - set(taxonomy.EDIT_TYPES))
    if unknown:
        raise ConfigError(f"masks.dilate names unknown edit type(s) {unknown}; known: {sorted(taxonomy.EDIT_TYPES)} "
                         "(pose and motion edits are `action`)")
    for name, radius in dilate.items():
        if isinstance(radius, bool) or not isinstance(radius, int) or radius < 0:
            raise ConfigError(f"masks.dilate.{name} must be an int >= 0 (pixels), got {radius!r}")
    return {name: radius for name, radius in dilate.items() if radius > 0}


def dilate_records(records: list[dict[str, Any]], dilate: dict[str, int]) -> list[dict[str, Any]]:
    """Dilate each eligible record's mask in place by its edit type's radius; returns all records."""
    from curate.masks.refine import dilate as dilate_mask

    if not dilate:
        return records
    for record in records:
        radius = dilate.get(record.get("edit_type") or "", 0)
        if not radius or not schema.is_ok(record) or record.get("mask") is None:
            continue
        if record.get("mask_source") in UNTOUCHED_SOURCES:
            continue
        mask = rle.decode(record["mask"])
        if not mask.any():
            continue
        record["mask"] = rle.encode(dilate_mask(mask, radius))
        record["scores"] = {**(record.get("scores") or {}), SCORE: float(radius)}
    return records
