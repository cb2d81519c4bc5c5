"""Threshold filters over score columns, applied in a fixed order so each reject is charged to the first filter.

Each filter reads one score; ``None`` in params disables it. A missing score (NaN: not computed, e.g. CLIP off, or not
applicable, e.g. background PSNR of a whole-image edit) passes: a filter only rejects what it could measure. Mask-shape
filters apply to *region edits* only: local edits whose mask is the edited object (not global edits, whose mask is
the whole image, nor background replacement, whose mask is the complement of a possibly small subject).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, fields
from typing import Annotated, Optional

import numpy as np

from editkit.scores import (BG_PSNR, BG_SSIM, CLIP_DIRECTION, CLIP_IMAGE_SIM, INSTRUCTION_CLARITY, MASK_ACCURACY,
                            MASK_AREA, MASK_COMPONENTS, TARGET_PROMINENCE)
from editkit.config_meta import Range, check_fields
from editkit.needs import Needs

SHIPPED_DERIVED_IOU = "shipped_derived_iou"  # written by the masks stage (curate.stages.masks.SHIPPED_IOU_SCORE)


@dataclass
class FilterParams:
    """Thresholds; starting points from UltraEdit, ImgEdit and AnyEdit practice (masks covering 1–90 % of the
    image, CLIP image-image ≥ 0.7, directional CLIP ≥ 0.05)."""

    mask_area_min: Annotated[Optional[float], Range(ge=0, le=1)] = 0.002
    """region edits: minimum fraction of the image that changes (null: no minimum)"""
    mask_area_max: Annotated[Optional[float], Range(ge=0, le=1)] = 0.9
    """region edits: maximum fraction of the image that changes (null: no maximum)"""
    mask_components_max: Annotated[Optional[float], Range(ge=0)] = 50
    """most connected components a mask may have (null: any number)"""
    bg_psnr_min: Annotated[Optional[float], Range(ge=0)] = 20.0
    """minimum background PSNR in dB outside the mask (null: off)"""
    bg_ssim_min: Annotated[Optional[float], Range(ge=-1, le=1)] = 0.7
    """minimum background SSIM outside the mask (null: off)"""
    clip_image_sim_min: Annotated[Optional[float], Range(ge=-1, le=1)] = 0.7
    """minimum CLIP source/edited image similarity, only when CLIP scores exist"""
    clip_direction_min: Annotated[Optional[float], Range(ge=-1, le=1)] = 0.05
    """minimum CLIP directional similarity of the edit and instruction (null: off)"""
    instruction_clarity_min: Annotated[Optional[float], Range(ge=0, le=10)] = None
    """MLLM quality scores, 0-10 (score.quality; skipped while it is off). Off by default; CoCoEdit-style: 6-7."""
    mask_accuracy_min: Annotated[Optional[float], Range(ge=0, le=10)] = None
    """minimum MLLM mask accuracy 0-10; region edits only (a whole-image mask has nothing to be accurate to)"""
    target_prominence_min: Annotated[Optional[float], Range(ge=0, le=10)] = None
    """minimum MLLM target prominence 0-10; region edits only"""
    shipped_derived_iou_min: Annotated[Optional[float], Range(ge=0, le=1)] = None
    """minimum IoU of a dataset's shipped mask with the pipeline's derived mask (masks stage); records without a shipped
    mask pass. Off by default (null)"""

    def __post_init__(self) -> None:
        check_fields(self)
        low, high = self.mask_area_min, self.mask_area_max
        if low is not None and high is not None and low > high:
            raise ValueError(f"mask_area_min ({low}) is above mask_area_max ({high}): no pair could pass")


@dataclass(frozen=True)
class Filter:
    score: str
    bound: str  # "min": reject value < threshold; "max": reject value > threshold
    region_edits_only: bool = False

    @property
    def needs(self) -> Needs:
        """The record fields it reads (:mod:`editkit.needs`): the scores map, and what tells a region edit apart."""
        return Needs(("scores", "edit_type", "scope") if self.region_edits_only else ("scores",))


FILTERS: dict[str, Filter] = {
    "mask_area_min": Filter(MASK_AREA, "min", region_edits_only=True),
    "mask_area_max": Filter(MASK_AREA, "max", region_edits_only=True),
    "mask_components_max": Filter(MASK_COMPONENTS, "max", region_edits_only=True),
    "bg_psnr_min": Filter(BG_PSNR, "min"),
    "bg_ssim_min": Filter(BG_SSIM, "min"),
    "clip_image_sim_min": Filter(CLIP_IMAGE_SIM, "min"),
    "clip_direction_min": Filter(CLIP_DIRECTION, "min"),
    "instruction_clarity_min": Filter(INSTRUCTION_CLARITY, "min"),
    "mask_accuracy_min": Filter(MASK_ACCURACY, "min", region_edits_only=True),
    "target_prominence_min": Filter(TARGET_PROMINENCE, "min", region_edits_only=True),
    "shipped_derived_iou_min": Filter(SHIPPED_DERIVED_IOU, "min"),
}
assert [f.name for f in fields(FilterParams)] == list(FILTERS), "FilterParams and FILTERS must list the same filters"


def active_filters(params: FilterParams) -> list[tuple[str, Filter, float]]:
    return [(name, spec, float(getattr(params, name))) for name, spec in FILTERS.items()
            if getattr(params, name) is not None]


def check_input(params: FilterParams, columns: list[str], where: str) -> None:
    """Fail (one line naming the filter and the field) when an active filter reads a field ``columns`` lacks."""
    from editkit.needs import require

    for name, spec, _ in active_filters(params):
        require(f"filter {name!r}", spec.needs, columns, where)


def needed_scores(params: FilterParams) -> list[str]:
    return sorted({spec.score for _, spec, _ in active_filters(params)})


def reason(name: str, spec: Filter, threshold: float) -> str:
    sign = "<" if spec.bound == "min" else ">"
    return f"{name}: {spec.score} {sign} {threshold:g}"


@functools.lru_cache(maxsize=4096)  # called once per record at 10^6 scale; few distinct (type, scope) pairs
def is_region_edit(edit_type: str, scope: str | None) -> bool:
    """Local edit whose mask is the changed object itself (see the module docstring); unknown types count as such."""
    from editkit import taxonomy

    known = taxonomy.EDIT_TYPES.get(edit_type)
    if (scope or (known.scope if known else "local")) != "local":
        return False
    return known is None or known.mask_rule not in ("complement", "whole")


def fails(spec: Filter, threshold: float, values: np.ndarray, is_region_edit: np.ndarray) -> np.ndarray:
    """Boolean array: which rows this filter rejects (NaN never fails; region-only filters skip other edits)."""
    with np.errstate(invalid="ignore"):
        bad = values < threshold if spec.bound == "min" else values > threshold
    bad &= ~np.isnan(values)
    if spec.region_edits_only:
        bad &= is_region_edit
    return bad
