"""Mask proposals for benchmark items (source image + instruction, no edited image).

The taxonomy's mask rule of the item's edit type decides what can be proposed:

=============  ==========================================================================================
rule           proposal
=============  ==========================================================================================
whole          the whole image (style, tone, extraction), ``mask_source="whole"``; nothing to review
source/union   the target phrase grounded in the source image (``grounded``) when a grounder is configured
complement     the complement of the kept subject grounded in the source (background edits)
edited         nothing: the object exists only after the edit (additions); left to review
=============  ==========================================================================================

Anything not proposed gets ``mask=None``, ``mask_source="none"`` and the ``needs_review`` flag: a reviewer draws it in
Label Studio (`editkit annotate ...`), or known masks are supplied with ``bench build --masks``.
"""
from __future__ import annotations

from typing import Any, Callable, Optional

import numpy as np

from curate import rle, schema, taxonomy

# image (HxWx3 uint8), phrases -> HxW bool mask of the phrases' objects, or None when nothing was found.
Grounder = Callable[[np.ndarray, list[str]], Optional[np.ndarray]]
NEEDS_REVIEW = "needs_review"


def propose(record: dict[str, Any], image: np.ndarray, grounder: Grounder | None = None) -> dict[str, Any]:
    """Fill ``mask`` / ``mask_source`` / flags of one (ok) benchmark record, in place; returns it."""
    if not schema.is_ok(record):
        return record
    kind = taxonomy.get(record["edit_type"])
    height, width = image.shape[:2]
    if kind.mask_rule == "whole" or not kind.pixel_aligned:
        record["mask"], record["mask_source"] = rle.full(height, width), "whole"
        return record
    mask = None
    if grounder is not None and kind.mask_rule in ("source", "union", "complement") and record["target_phrases"]:
        found = grounder(image, list(record["target_phrases"]))
        if found is not None and found.any():
            mask = ~found if kind.mask_rule == "complement" else found
        else:
            schema.add_flag(record, "grounding_found_nothing")
    if mask is None:
        record["mask"], record["mask_source"] = None, "none"
        schema.add_flag(record, NEEDS_REVIEW)
    else:
        record["mask"], record["mask_source"] = rle.encode(mask), "grounded"
        schema.add_flag(record, NEEDS_REVIEW)  # machine masks are proposals until a person accepts them
    return record


def apply_known_mask(record: dict[str, Any], mask: np.ndarray) -> dict[str, Any]:
    """Use a supplied mask (white = should change) as ground truth; a size mismatch rejects the record."""
    if not schema.is_ok(record):
        return record
    if mask.shape != (record["height"], record["width"]):
        return schema.reject(record, "bench_build", f"supplied mask is {mask.shape[1]}x{mask.shape[0]}, image is "
                                                    f"{record['width']}x{record['height']}")
    encoded = rle.encode(mask)
    record.update(mask=encoded, gt_mask=encoded, mask_source="gt")
    record["flags"] = [f for f in record["flags"] if f != NEEDS_REVIEW]
    return record


def load_grounder(spec: dict[str, Any] | None) -> Grounder | None:
    """The grounded masker (Grounding-DINO -> SAM2, :mod:`curate.masks.grounded`) when weights are configured."""
    if not spec:
        return None
    try:
        from curate.masks import grounded
    except ModuleNotFoundError as error:
        raise RuntimeError("bench.grounding is set but curate.masks.grounded is not available; "
                           "leave bench.grounding empty to build without grounded proposals") from error
    return grounded.make_grounder(**spec)
