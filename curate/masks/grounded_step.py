"""The grounded-mask step over one shard: plan what to ground per record, run the masker in batches, fuse, record.

The boxes come from ``params.detector`` (Grounding-DINO, or an MLLM: :mod:`curate.masks.mllm_boxes`). Runs AFTER
the diff step of the ``masks`` stage (``masks.mode: grounded``): a record's current mask, when its
``mask_source`` is ``"diff"``, is the diff mask that :func:`curate.masks.fusion.fuse` compares against. Masks that
came from elsewhere (``gt``, ``human``, ...) are never overwritten. Per record it writes ``mask``, ``mask_source``,
``flags``, ``scores`` (``grounding_diff_iou``, ``grounding_boxes``, ``grounding_max_score``) and the boxes, phrases
and rule under ``meta["grounding"]`` (JSON), so every decision can be traced.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np

from editkit import rle, schema, taxonomy
from curate.masks import fusion
from curate.masks.grounded import GroundedMasker, Grounding, GroundingParams
from curate.masks.phrases import record_phrases

STAGE = "masks"
REPLACEABLE_SOURCES = (None, "none", "diff")  # masks the grounded step may replace


@dataclass
class _Plan:
    record: dict[str, Any]
    rule: str
    phrases: list[str]
    wanted: tuple[str, ...]  # "source"/"edited": the images to ground in (decoded only when their batch runs)
    failed: bool = False


def grounded_step(records: list[dict[str, Any]], images: Any, params: GroundingParams,
                  masker: GroundedMasker | None = None) -> list[dict[str, Any]]:
    """Ground + fuse every eligible record of one shard; returns all records (none dropped).

    ``masker`` should be created once per stage run (from the same ``params``: its detection thresholds and device
    are fixed when it is built) and passed in; a new one is loaded when it is None. Images are decoded batch by
    batch and a record is fused as soon as its images are grounded, so memory stays at one batch of pixels.
    """
    from tqdm.auto import tqdm

    plans = [plan for plan in (_plan(record, params) for record in records) if plan is not None]
    if not plans:
        return records
    if images is None:
        raise ValueError("grounded masks need the shard's images; run the masks stage with its images directory")
    masker = masker or GroundedMasker(params)
    jobs = [(plan, which) for plan in plans for which in plan.wanted]
    found: dict[tuple[int, str], Grounding] = {}
    with tqdm(total=len(jobs), desc="grounding", unit="img", disable=not params.progress) as bar:
        for start in range(0, len(jobs), params.batch_size):
            batch = jobs[start:start + params.batch_size]
            chunk = [(plan, which, _pixels(plan, which, images)) for plan, which in batch]
            chunk = [(plan, which, pixels) for plan, which, pixels in chunk if not plan.failed]
            results = masker.ground_batch([pixels for _, _, pixels in chunk], [plan.phrases for plan, _, _ in chunk])
            for (plan, which, _), result in zip(chunk, results):
                found[(id(plan), which)] = result
                if all((id(plan), w) in found for w in plan.wanted):
                    _apply(plan, {w: found.pop((id(plan), w)) for w in plan.wanted}, params)
            bar.update(len(batch))
    return records


def _plan(record: dict[str, Any], params: GroundingParams) -> _Plan | None:
    """What to ground for one record, or None when the record needs no grounding (decided and recorded here)."""
    if not schema.is_ok(record) or record.get("mask_source") not in REPLACEABLE_SOURCES:
        return None
    edit_type = taxonomy.EDIT_TYPES.get(record.get("edit_type") or "")
    if edit_type is None:
        schema.add_flag(record, "edit_type_unknown")  # conservative: the object may change in either image
    rule = edit_type.mask_rule if edit_type else "union"
    if rule == "whole":
        shape = (int(record["height"]), int(record["width"]))
        _store(record, fusion.fuse(rule, {}, None, shape, params.min_iou))
        return None
    phrases = record_phrases(record)
    if rule == "complement" and not record.get("target_phrases"):
        phrases = [params.foreground_prompt]  # a background edit names the new background, not the kept subject
    if not phrases:
        schema.add_flag(record, "no_target_phrases")  # the diff mask (if any) stays
        return _no_grounding(record)
    wanted = fusion.images_to_ground(rule, bool(record.get("has_edited")))
    if not wanted:
        schema.add_flag(record, "grounding_needs_edited")  # e.g. "add" on a benchmark item: nothing to ground in
        return _no_grounding(record)
    return _Plan(record, rule, phrases, wanted)


def _pixels(plan: _Plan, which: str, images: Any) -> np.ndarray | None:
    """Decode one image of a plan; a corrupt, missing or wrongly sized image rejects that record only."""
    if plan.failed:
        return None
    record = plan.record
    expected = (int(record["height"]), int(record["width"]))
    try:
        image = images.source(record["id"]) if which == "source" else images.edited(record["id"])
    except Exception as err:
        return _fail(plan, f"grounding: cannot read the {which} image ({type(err).__name__}: {err})")
    if image is None or image.shape[:2] != expected:
        got = None if image is None else image.shape[:2]
        return _fail(plan, f"grounding: {which} image is {got}, the record says {expected}")
    return image


def _fail(plan: _Plan, reason: str) -> None:
    plan.failed = True
    schema.reject(plan.record, STAGE, reason)
    return None


def _no_grounding(record: dict[str, Any]) -> None:
    if record.get("mask") is None:
        record["mask_source"] = "none"
    return None


def _apply(plan: _Plan, found: dict[str, Grounding], params: GroundingParams) -> None:
    record = plan.record
    shape = (int(record["height"]), int(record["width"]))
    masks = {which: refine_grounded(result.mask, params) for which, result in found.items()}
    diff = None
    if record.get("mask_source") == "diff" and record.get("mask") is not None:
        diff = rle.decode(record["mask"])
    fused = fusion.fuse(plan.rule, masks, diff, shape, params.min_iou)
    _store(record, fused)
    scores = [s for result in found.values() for s in result.scores]
    counts = {"grounding_boxes": float(sum(len(result.boxes) for result in found.values()))}
    if params.detector != "mllm":  # an MLLM states no confidence
        counts["grounding_max_score"] = max(scores) if scores else 0.0
    record["scores"] = {**(record.get("scores") or {}), **counts}
    if any(result.dropped_boxes for result in found.values()):
        schema.add_flag(record, "grounding_bad_boxes")  # malformed detector output was discarded
    if any(result.detector_status.startswith("fallback") for result in found.values()):
        schema.add_flag(record, "grounding_mllm_fallback")  # no usable MLLM reply: the diff mask stays
    _add_meta(record, {
        "rule": plan.rule, "phrases": plan.phrases, "detector": params.detector,
        **{which: _found_meta(r) for which, r in found.items()},
    })


def _found_meta(result: Grounding) -> dict[str, Any]:
    meta: dict[str, Any] = {"boxes": result.boxes, "scores": [round(s, 4) for s in result.scores],
                            "labels": result.labels}
    if result.detector_status:  # the MLLM detector: its outcome and every reason a box or a reply was refused
        meta.update(status=result.detector_status, dropped=result.dropped_reasons,
                    errors=[e[:300] for e in result.detector_errors])
    return meta


def refine_grounded(mask: np.ndarray, params: GroundingParams) -> np.ndarray:
    """Clean one grounded mask with the shared morphology helpers (holes, small blobs, optional dilation)."""
    from curate.masks import refine

    return refine.refine(mask, params.refine) if mask.any() else mask


def _store(record: dict[str, Any], fused: fusion.Fused) -> None:
    if fused.mask is not None:
        record["mask"] = rle.encode(fused.mask)
        record["mask_source"] = fused.mask_source
    elif record.get("mask") is None:
        record["mask_source"] = "none"
    for flag in fused.flags:
        schema.add_flag(record, flag)
    record["scores"] = {**(record.get("scores") or {}), **fused.scores}


def _add_meta(record: dict[str, Any], grounding: dict[str, Any]) -> None:
    try:
        meta = json.loads(record.get("meta") or "{}")
    except json.JSONDecodeError:
        meta = {"previous_meta": record.get("meta")}  # keep unparseable meta rather than lose it
    if not isinstance(meta, dict):
        meta = {"previous_meta": meta}
    meta["grounding"] = grounding
    record["meta"] = json.dumps(meta, sort_keys=True)


def make_grounded_step(params: GroundingParams, masker: GroundedMasker | None = None):
    """A ``step(records, images)`` for :func:`editkit.pipeline.run_stage` holding ONE masker for the whole run.

    Loading happens here, before any shard is read, so missing weights fail the stage at once with
    :class:`~curate.masks.grounded.WeightsUnavailableError`.
    """
    return GroundedStep(params, masker or GroundedMasker(params))


class GroundedStep:
    """The step holding one masker; ``counters`` are the MLLM detector's requests (none for Grounding-DINO)."""

    def __init__(self, params: GroundingParams, masker: GroundedMasker):
        self.params, self.masker = params, masker

    @property
    def counters(self) -> dict[str, int]:
        return {f"mllm_{k}": v for k, v in self.masker.counters.items()}

    @property
    def facts(self) -> dict[str, str]:
        boxer = self.masker.boxer
        return {"mllm_model": boxer.client.backend.model_id} if boxer is not None else {}

    def __call__(self, records: list[dict[str, Any]], images: Any) -> list[dict[str, Any]]:
        return grounded_step(records, images, self.params, self.masker)

    def close(self) -> None:
        self.masker.close()
