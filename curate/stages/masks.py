"""The `masks` stage: an edit mask (pixels that SHOULD change) for every record with an edited image.

Reads ``data/rewrite/records`` + ``data/ingest/images``, writes ``data/masks/records`` and ``metrics/masks.json``.

* ``mode: diff`` - pixel-difference masks (:mod:`curate.masks.diff`): ``mask``, ``mask_source="diff"`` (or
  ``"whole"`` for a global edit, whose mask is the whole image), and ``diff_*`` statistics in ``scores``.
* Records without an edited image (benchmark items) get no diff mask: flag ``no_edited_image``, not rejected.
* ``mode: grounded`` - after the diff step, boxes -> SAM2 masks fused with the diff per edit type
  (:mod:`curate.masks.grounded_step`, params ``masks.grounding``); the boxes come from Grounding-DINO (default) or
  an MLLM (``detector: mllm``); missing weights or an unusable MLLM stop the stage with a message.
* ``dilate`` - per edit type, the final mask is dilated by that many pixels (:mod:`curate.masks.dilation`).
* A mask that came with the data (``mask_source`` gt/human) is kept; the diff mask is still computed for the metrics.
* ``source_policy`` - what a record whose dataset ships a mask (``gt_mask``) carries on (:func:`apply_source_policy`,
  after the derived mask is made): ``keep`` (default) the shipped mask (``mask_source="gt"``), ``fuse`` the union of
  shipped and derived (``"gt_fused"``), ``derive`` the derived one, with the flag ``shipped_mask_replaced`` (the
  shipped mask stays in ``gt_mask`` and is exported beside it). Either way ``scores["shipped_derived_iou"]`` is the
  IoU of the shipped and the derived mask at the record's resolution (select can filter on it). The built-in
  sample's ``gt_mask`` is its evaluation truth, not a shipped mask: its records keep the derived mask.
* ``metrics/masks.json``: ``mean_iou`` of the diff masks against ``gt_mask`` (where known), overall and per edit
  type, with counts. A whole-image edit counts like any other: a whole mask vs a whole-image gt has IoU 1.
"""
from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, Optional

import typer

from curate.masks.diff import DiffParams
from curate.masks.grounded import GroundingParams
from curate.scoring.filters import SHIPPED_DERIVED_IOU
from editkit.config_meta import Range, check_fields

STAGE = "masks"
MODES = ("diff", "grounded")
KEPT_SOURCES = ("gt", "human")  # masks supplied with the data are never overwritten
IOU_SCORE = "diff_gt_iou"
SHIPPED_IOU_SCORE = SHIPPED_DERIVED_IOU  # IoU(shipped gt_mask, the pipeline's derived mask)
SOURCE_POLICIES = ("keep", "fuse", "derive")
EVALUATION_ONLY_ORIGINS = ("sample",)  # their gt_mask measures the derived masks; it is not a shipped mask
REPLACED_FLAG = "shipped_mask_replaced"


@dataclass
class MasksParams:
    mode: Literal["diff", "grounded"] = "diff"
    """how masks are made: diff (pixel differences) or grounded (boxes -> SAM2, needs weights)"""
    diff: DiffParams = field(default_factory=DiffParams)
    """pixel-difference masks (curate/masks/diff.py)"""
    grounding: GroundingParams = field(default_factory=GroundingParams)
    """the grounded masker, used by mode: grounded"""
    workers: Annotated[int, Range(ge=0)] = 0
    """worker processes for the per-record diff work; 0 = one per available CPU core (results do not change)"""
    dilate: dict[str, int] = field(default_factory=dict)
    """edit type -> radius (px) the final mask grows by"""
    source_policy: Literal["keep", "fuse", "derive"] = "keep"
    """records whose dataset ships a mask: keep it (default), fuse it with the derived mask (union), or derive (the
    derived mask replaces it, flagged shipped_mask_replaced); a reviewed mask always wins"""

    def __post_init__(self) -> None:
        from curate.masks.dilation import check_dilate

        self.dilate = check_dilate(self.dilate)
        check_fields(self)


def diff_step(records: list[dict[str, Any]], images: Any, params: MasksParams, pool: Any = None) -> list[dict[str, Any]]:
    """Batch -> batch: a diff mask for every ok record that has an edited image (all records returned).

    Records are independent: they are processed on ``params.workers`` processes (editkit.executors.RecordPool;
    ``pool``: one the caller keeps open across shards)."""
    import functools

    from editkit.executors import RecordPool

    own = pool is None
    pool = RecordPool(params.workers) if own else pool
    try:
        pool.map(functools.partial(_diff_record, params=params), records, images)
    finally:
        if own:
            pool.close()
    return records


def _diff_record(record: dict[str, Any], images: Any, params: MasksParams) -> None:
    """One record's diff mask, IoU vs gt and ``diff_*`` scores, in place (or a flag / a rejection)."""
    from editkit import rle, schema
    from curate.masks.diff import diff_mask

    if not schema.is_ok(record):
        return
    if record.get("has_edited") is False:
        schema.add_flag(record, "no_edited_image")  # benchmark item: nothing to difference
        if record.get("mask") is None:
            record["mask_source"] = "none"
        return
    from curate.images import decode_pair

    try:
        source, edited = decode_pair(images, record["id"])  # each image decoded once
    except Exception as error:  # ingest validated them; a failure means the shard was damaged since
        schema.reject(record, STAGE, f"cannot decode image: {type(error).__name__}: {error}")
        return
    if edited is None:
        schema.reject(record, STAGE, "edited image missing from the image shard")
        return
    if source.shape != edited.shape:
        schema.reject(record, STAGE, f"source {source.shape[:2]} and edited {edited.shape[:2]} sizes differ")
        return
    result = diff_mask(source, edited, params.diff)
    scores = {**(record.get("scores") or {}), **{k: float(v) for k, v in result.stats.items()}}
    if record.get("gt_mask") is not None:
        gt = rle.decode(record["gt_mask"])
        if gt.shape == result.mask.shape:
            scores[IOU_SCORE] = rle.iou(result.mask, gt)
    record["scores"] = scores
    if record.get("mask") is not None and record.get("mask_source") in KEPT_SOURCES:
        return
    record["mask"] = rle.encode(result.mask)
    record["mask_source"] = "whole" if result.whole else "diff"


class MasksStep:
    """diff -> (grounded + fusion) -> per-type dilation. ``mode: grounded`` loads one masker here for the whole run
    (missing weights or an unusable MLLM fail here, before any shard is read)."""

    def __init__(self, params: MasksParams):
        from editkit.executors import RecordPool

        self.params, self.grounded = params, None
        # worker processes for the diff (the process's shared pool; they import these modules once)
        self.pool = RecordPool(params.workers, preload=("curate.stages.masks", "curate.masks.diff"))
        if params.mode == "grounded":
            from curate.masks.grounded_step import make_grounded_step

            self.grounded = make_grounded_step(params.grounding)

    @property
    def counters(self) -> dict[str, int]:
        return self.grounded.counters if self.grounded is not None else {}

    @property
    def facts(self) -> dict[str, str]:
        return self.grounded.facts if self.grounded is not None else {}

    def __call__(self, records: list[dict[str, Any]], images: Any) -> list[dict[str, Any]]:
        from curate.masks.dilation import dilate_records

        records = diff_step(records, images, self.params, self.pool)
        if self.grounded is not None:
            records = self.grounded(records, images)
        records = dilate_records(records, self.params.dilate)
        return apply_source_policy(records, self.params.source_policy)

    def close(self) -> None:
        self.pool.close()
        if self.grounded is not None:
            self.grounded.close()


def has_shipped_mask(record: dict[str, Any]) -> bool:
    """The record's dataset shipped a mask (``gt_mask``), as opposed to the built-in sample's evaluation truth."""
    return record.get("gt_mask") is not None and record.get("origin") not in EVALUATION_ONLY_ORIGINS


def apply_source_policy(records: list[dict[str, Any]], policy: str) -> list[dict[str, Any]]:
    """Per ok record with a shipped mask: score the shipped/derived IoU, then carry the mask ``policy`` says.

    Precedence reviewed > shipped > derived: a ``human`` mask is never touched. A record with no derived mask (no
    edited image, or an unusable one) keeps its shipped mask whatever the policy. All records are returned."""
    from editkit import rle, schema
    from editkit.scores import stored

    if policy not in SOURCE_POLICIES:
        raise ValueError(f"masks.source_policy must be one of {', '.join(SOURCE_POLICIES)}, got {policy!r}")
    for record in records:
        if not schema.is_ok(record) or not has_shipped_mask(record) or record.get("mask_source") == "human":
            continue
        derived_rle = record.get("mask") if record.get("mask_source") not in KEPT_SOURCES + ("none", None) else None
        shipped = rle.decode(record["gt_mask"])
        if derived_rle is None:  # nothing derived to compare or fuse with: the shipped mask is the mask
            record["mask"], record["mask_source"] = record["gt_mask"], "gt"
            continue
        derived = rle.decode(derived_rle)
        if derived.shape != shipped.shape:  # ingest stores both at the record's resolution; anything else is a bug
            schema.reject(record, STAGE, f"shipped mask {shipped.shape} and derived mask {derived.shape} sizes differ")
            continue
        record["scores"] = {**(record.get("scores") or {}), SHIPPED_IOU_SCORE: stored(rle.iou(shipped, derived))}
        if policy == "keep":
            record["mask"], record["mask_source"] = record["gt_mask"], "gt"
        elif policy == "fuse":
            record["mask"], record["mask_source"] = rle.encode(shipped | derived), "gt_fused"
        else:
            schema.add_flag(record, REPLACED_FLAG)
    return records


def build_step(params: MasksParams) -> MasksStep:
    return MasksStep(params)


def summarize(records_dir: Path) -> dict[str, Any]:
    """mean IoU vs gt per edit type and overall, and counts (streams over shards)."""
    from editkit import schema, store

    ious: dict[str, list[float]] = defaultdict(list)
    shipped_ious: list[float] = []
    counts: dict[str, int] = defaultdict(int)
    for _, records in store.iter_records(records_dir):
        for record in records:
            counts["records"] += 1
            if not schema.is_ok(record):
                counts["rejected"] += 1
                continue
            counts[f"mask_source_{record.get('mask_source') or 'none'}"] += 1
            if "grounding_mllm_fallback" in (record.get("flags") or []):
                counts["grounding_mllm_fallback"] += 1
            if (record.get("scores") or {}).get("mask_dilate_px"):
                counts["dilated"] += 1
            if REPLACED_FLAG in (record.get("flags") or []):
                counts[REPLACED_FLAG] += 1
            if "mask_ambiguous" in (record.get("flags") or []):
                counts["mask_ambiguous"] += 1
            iou = (record.get("scores") or {}).get(IOU_SCORE)
            if iou is not None and not math.isnan(iou):
                ious[record.get("edit_type") or "unknown"].append(iou)
            shipped_iou = (record.get("scores") or {}).get(SHIPPED_IOU_SCORE)
            if shipped_iou is not None and not math.isnan(shipped_iou):
                shipped_ious.append(shipped_iou)
    every = [v for values in ious.values() for v in values]
    return {
        "mean_iou": round(sum(every) / len(every), 4) if every else None,
        "with_gt": len(every),
        "by_edit_type": {k: {"mean_iou": round(sum(v) / len(v), 4), "count": len(v)} for k, v in sorted(ious.items())},
        "counts": dict(sorted(counts.items())),
        "shipped_masks": {"count": len(shipped_ious), "mean_iou_vs_derived":
                          round(sum(shipped_ious) / len(shipped_ious), 4) if shipped_ious else None},
        "whole_image_rule": "global edits get the whole image as mask; vs a whole-image gt that is IoU 1",
    }


def run(params: MasksParams, input_dir: Path, images_dir: Path, output_dir: Path, executor: Any = None,
        metrics_file: Path | None = None) -> dict[str, Any]:
    """Run the stage and return its metrics (with ``metrics_file``: also written with the records, atomically)."""
    from editkit.pipeline import Deferred, run_stage

    def metrics_of(stats, records_dir: Path) -> dict[str, Any]:
        metrics = {**stats.as_dict(), "mode": params.mode, "source_policy": params.source_policy,
                   **summarize(records_dir)}
        if params.dilate:  # only when set: the default run's metrics stay as they were
            metrics["dilate"] = dict(params.dilate)
        if params.mode == "grounded":
            metrics["detector"] = params.grounding.detector
            if params.grounding.detector == "mllm":
                metrics["mllm_model"] = stats.facts.get("mllm_model") or params.grounding.mllm.client.model
                metrics["mllm_requests"] = {k[len("mllm_"):]: v for k, v in stats.counters.items()
                                            if k.startswith("mllm_")}
        return metrics

    stats = run_stage(STAGE, input_dir, output_dir, Deferred(build_step, params), images_dir=images_dir,
                      executor=executor, metrics_file=metrics_file, summarize=metrics_of)
    return {**stats.metrics, **{k: v for k, v in stats.as_dict().items() if k in ("seconds", "records_per_s")}}


def main(
    params_file: Path = typer.Option(Path("params.yaml"), "--params", help="params file (section `masks`)"),
    input_dir: Path = typer.Option(Path("data/rewrite/records"), "--input", help="record shards written by rewrite"),
    images_dir: Path = typer.Option(Path("data/ingest/images"), "--images", help="image shards written by ingest"),
    output_dir: Path = typer.Option(Path("data/masks/records"), "--out", help="where to write the masked records"),
    metrics_file: Path = typer.Option(Path("metrics/masks.json"), "--metrics", help="mean IoU vs gt per edit type"),
    executor: Optional[str] = typer.Option(None, "--executor", help="local | ray (default: params.yaml `executor`)"),
) -> None:
    """Edit masks by pixel difference (robust to JPEG and photometric jitter); IoU vs ground truth where known."""
    from editkit import config

    from curate.masks.grounded import WeightsUnavailableError
    from editkit.executors import stage_executor
    from editkit.mllm.backends import MLLMError

    params = config.load_section(MasksParams, STAGE, params_file)
    try:
        metrics = run(params, input_dir, images_dir, output_dir, stage_executor(params_file, executor),
                      metrics_file=metrics_file)  # committed with the records (one atomic step)
    except (WeightsUnavailableError, MLLMError) as error:  # which model, where it looked, how to run diff-only
        typer.echo(f"masks: {error}", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"masks: {metrics['records_in']} records, mean_iou={metrics['mean_iou']} over {metrics['with_gt']} "
               f"with gt, rejected here {metrics['rejected_here']}")
