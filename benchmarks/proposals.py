"""Mask proposals for benchmark items (source image + instruction, no edited image).

The taxonomy's mask rule of the item's edit type decides what can be proposed (the rules themselves are
:mod:`curate.masks.fusion`'s, with no edited image and so no diff mask):

=============  ==========================================================================================
rule           proposal
=============  ==========================================================================================
whole          the whole image (style, tone, extraction), ``mask_source="whole"``; nothing to review
source/union   the target phrases grounded in the source image (``grounded``) when a masker is configured
complement     the complement of the kept subject grounded in the source (background edits)
edited         nothing: the object exists only after the edit (additions); left to review
=============  ==========================================================================================

Anything not proposed gets ``mask=None``, ``mask_source="none"`` and the ``needs_review`` flag; grounded masks keep
the flag too (machine proposals until a person accepts them in Label Studio, `editkit annotate ...`). Known masks can
be supplied instead (``bench build --masks``).
"""
from __future__ import annotations

import re
from typing import Any, Optional, Sequence

import numpy as np

from editkit import rle, schema, taxonomy

NEEDS_REVIEW = "needs_review"
_KEEP = re.compile(r"\b(?:keep|keeping|preserve|preserving)\s+(?:the\s+|a\s+|an\s+)?"
                   r"(.+?)(?=\s+(?:in|on|at|as|and|while|"
                   r"unchanged|intact|the same)\b|[.,;!]|$)", re.I)


def kept_subject(instruction: str) -> list[str]:
    """The subject a background edit says to keep ("..., keep the blue square" -> "blue square"), or []."""
    match = _KEEP.search(" ".join((instruction or "").split()))
    phrase = match.group(1).strip(" .,;:!\"'").lower() if match else ""
    return [phrase] if phrase and phrase not in {"it", "them", "everything else", "the rest"} else []


def grounding_phrases(record: dict[str, Any], foreground_prompt: str = "main subject") -> list[str]:
    """What to ground in the source: the target phrases, or for background edits the subject to keep."""
    from curate.masks.phrases import record_phrases

    if record["edit_type"] is not None and taxonomy.get(record["edit_type"]).mask_rule == "complement":
        return kept_subject(record["instruction"]) or [foreground_prompt]
    return record_phrases(record)


def propose(records: Sequence[dict[str, Any]], images: Sequence[np.ndarray], masker: Any = None) -> None:
    """Fill ``mask`` / ``mask_source`` / flags of a batch of benchmark records in place (one masker forward).

    ``masker`` is a :class:`curate.masks.grounded.GroundedMasker` (or anything with its ``ground_batch`` and
    ``params.min_iou``); None means no grounding weights are configured.
    """
    from curate.masks import fusion

    grounding = []
    for record, image in zip(records, images):
        if not schema.is_ok(record):
            continue
        if record["edit_type"] is None:  # no type (ImgEdit UGE): no rule says what to ground; a reviewer draws it
            _apply(record, None)
            continue
        rule = taxonomy.get(record["edit_type"]).mask_rule
        wants_source = "source" in fusion.images_to_ground(rule, has_edited=False)
        if rule != "whole" and masker is not None and wants_source and record["target_phrases"]:
            grounding.append((record, image))
        else:
            _apply(record, fusion.fuse(rule, {}, None, image.shape[:2], 0.0) if rule == "whole" else None)
    if grounding:
        found = masker.ground_batch([image for _, image in grounding], [r["target_phrases"] for r, _ in grounding])
        for (record, image), result in zip(grounding, found):
            rule = taxonomy.get(record["edit_type"]).mask_rule
            _apply(record, fusion.fuse(rule, {"source": result.mask}, None, image.shape[:2], masker.params.min_iou))


def _apply(record: dict[str, Any], fused: Optional[Any]) -> None:
    """Write a fusion outcome (None: nothing could be proposed) into the record."""
    if fused is not None and fused.mask_source == "whole":
        record["mask"], record["mask_source"] = rle.encode(fused.mask), "whole"
        return
    if fused is not None:
        for flag in fused.flags:
            schema.add_flag(record, flag)
    if fused is None or fused.mask is None:
        record["mask"], record["mask_source"] = None, "none"
    else:
        record["mask"], record["mask_source"] = rle.encode(fused.mask), fused.mask_source
    schema.add_flag(record, NEEDS_REVIEW)


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


def load_masker(params: Any) -> Any:
    """The grounded masker (Grounding-DINO -> SAM2) of ``bench.grounding`` (GroundingParams or None = none)."""
    if params is None:
        return None
    from curate.masks.grounded import GroundedMasker

    return GroundedMasker(params)
