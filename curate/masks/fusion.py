"""Fuse grounded masks (Grounding-DINO -> SAM2) with the pixel-difference mask, per edit type.

Pure numpy, no model I/O. The edit type's ``mask_rule`` (:mod:`editkit.taxonomy`) says which grounded masks make the
edit region:

============  ==========================================================================================
rule          grounded edit region
============  ==========================================================================================
edited        the target grounded in the EDITED image (``add``: the object exists only after the edit)
source        the target grounded in the SOURCE image (``remove``: the object exists only before)
union         source ∪ edited (``replace``, ``recolor``, ``material``, ``action``, ... change in place)
complement    NOT (foreground in source ∪ foreground in edited) (``background``: everything but the subject)
whole         the whole image (``style``, ``tone``, ``extract``); no grounding, no diff check
============  ==========================================================================================

Then, when the record has a diff mask (a source/edited pair):

* grounding found nothing                    -> keep the diff mask, ``mask_source="diff"``, flag ``grounding_empty``
* IoU(grounded, diff) < ``min_iou``          -> keep the diff mask, ``mask_source="diff"``, flag ``grounding_disagrees``
* otherwise                                  -> grounded ∪ diff, ``mask_source="fused"`` (the grounded mask gives the
  object's full extent, the diff adds side effects such as shadows that the edit really changed)

The IoU is always stored in ``scores["grounding_diff_iou"]``. Benchmark items have no edited image and so no diff
mask: the grounded mask alone is used (``mask_source="grounded"``), and an empty grounding leaves no mask
(``mask_source="none"``, flag ``grounding_empty``). Nothing is decided silently.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from editkit import rle

RULES = ("edited", "source", "union", "complement", "whole")
IOU_SCORE = "grounding_diff_iou"


@dataclass
class Fused:
    """The fusion outcome for one record: the mask to store (None = no mask), its source, flags and scores."""

    mask: np.ndarray | None
    mask_source: str
    flags: list[str] = field(default_factory=list)
    scores: dict[str, float] = field(default_factory=dict)


def images_to_ground(rule: str, has_edited: bool) -> tuple[str, ...]:
    """Which images (``"source"``, ``"edited"``) the rule grounds in, given what the record has."""
    wanted = {"edited": ("edited",), "source": ("source",), "union": ("source", "edited"),
              "complement": ("source", "edited"), "whole": ()}[_check_rule(rule)]
    return tuple(name for name in wanted if name == "source" or has_edited)


def grounded_region(rule: str, grounded: dict[str, np.ndarray], shape: tuple[int, int]) -> np.ndarray | None:
    """The edit region the rule derives from the grounded masks (keyed ``"source"``/``"edited"``).

    Returns None when grounding found nothing usable (no mask in the images the rule needs, or all of them empty);
    for ``complement`` "nothing" means the foreground was not found (its complement would be the whole image).
    """
    _check_rule(rule)
    if rule == "whole":
        return np.ones(shape, dtype=bool)
    found = [np.asarray(m, dtype=bool) for m in grounded.values() if m is not None]
    for mask in found:
        if mask.shape != tuple(shape):
            raise ValueError(f"grounded mask has shape {mask.shape}, the image is {tuple(shape)}")
    if not found or not any(m.any() for m in found):
        return None
    union = np.logical_or.reduce(found)
    return ~union if rule == "complement" else union


def fuse(rule: str, grounded: dict[str, np.ndarray], diff: np.ndarray | None, shape: tuple[int, int],
         min_iou: float) -> Fused:
    """Combine the rule's grounded region with the diff mask (see the module docstring for the decision table)."""
    if rule == "whole":
        return Fused(np.ones(shape, dtype=bool), "whole")
    region = grounded_region(rule, grounded, shape)
    if diff is None:
        if region is None:
            return Fused(None, "none", ["grounding_empty"])
        return Fused(region, "grounded")
    diff = np.asarray(diff, dtype=bool)
    if diff.shape != tuple(shape):
        raise ValueError(f"diff mask has shape {diff.shape}, the image is {tuple(shape)}")
    if region is None:
        return Fused(diff, "diff", ["grounding_empty"])
    iou = rle.iou(region, diff)
    scores = {IOU_SCORE: iou}
    if iou < min_iou:
        return Fused(diff, "diff", ["grounding_disagrees"], scores)
    return Fused(region | diff, "fused", [], scores)


def _check_rule(rule: str) -> str:
    if rule not in RULES:
        raise ValueError(f"unknown mask rule {rule!r}; known: {RULES} (see editkit.taxonomy)")
    return rule
