"""Merge human reviews into records: the `review` DVC stage (``editkit annotate merge``). Needs no server.

Input: the committed reviews file (``reviews/masks.json``, written by ``editkit annotate pull``; ``[]`` until the first
pull), a list of ``{"sample_id", "choice", "comment", "mask" (COCO RLE or null), "task_id", "annotation_id"}``.

Per record (nothing is dropped):
* no review          -> unchanged, ``review_status`` None
* ``accept``         -> mask kept (``mask_source`` unchanged), ``mask_predicted`` = mask, IoU 1
* ``fixed``          -> ``mask`` = reviewed mask, ``mask_source="human"``, the old mask in ``mask_predicted``
* ``reject``         -> record rejected by stage ``review`` with the reviewer's comment as reason
* unusable review (unknown choice, fixed without a mask, wrong mask size) -> unchanged, flagged ``review_invalid``
The IoU between predicted and reviewed masks is stored as score ``review_iou`` and averaged per edit type in
``metrics/review.json``.
"""
from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

from editkit import rle, schema

STAGE = "review"
CHOICES = ("accept", "fixed", "reject")


def load_reviews(path: str | Path) -> dict[str, dict[str, Any]]:
    """sample_id -> review. A missing file means no reviews yet."""
    path = Path(path)
    if not path.exists():
        return {}
    reviews = json.loads(path.read_text())
    if not isinstance(reviews, list):
        raise ValueError(f"{path} must hold a JSON list of reviews (run `editkit annotate pull`)")
    return {review["sample_id"]: review for review in reviews}


def merge_record(record: dict[str, Any], review: dict[str, Any] | None) -> dict[str, Any]:
    """Apply one review to one record (in place) and return it."""
    if review is None or not schema.is_ok(record):
        return record
    choice = review.get("choice")
    record["review_comment"] = review.get("comment") or None
    predicted = record.get("mask")
    if choice == "reject":
        record["review_status"] = "reject"
        return schema.reject(record, STAGE, f"reviewer rejected: {review.get('comment') or 'no comment'}")
    if choice == "accept":
        record["review_status"] = "accept"
        record["mask_predicted"] = predicted
        record["scores"] = {**record["scores"], "review_iou": 1.0}
        return record
    reviewed = review.get("mask")
    size = [record.get("height"), record.get("width")]
    if choice != "fixed" or reviewed is None or list(reviewed["size"]) != size:
        schema.add_flag(record, "review_invalid")
        return record
    record["review_status"] = "fixed"
    record["mask_predicted"] = predicted
    record["mask"] = reviewed
    record["mask_source"] = "human"
    if predicted is not None:
        record["scores"] = {**record["scores"], "review_iou": rle.iou(rle.decode(predicted), rle.decode(reviewed))}
    return record


def merge_step(reviews: dict[str, dict[str, Any]]):
    """A pure batch -> batch step for :func:`editkit.pipeline.run_stage`."""

    def step(records: list[dict[str, Any]], _images=None) -> list[dict[str, Any]]:
        return [merge_record(record, reviews.get(record["id"])) for record in records]

    return step


def review_metrics(records_dir: str | Path, reviews: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Counts per review status and mean predicted-vs-reviewed IoU per edit type."""
    from editkit import store

    statuses: dict[str, int] = defaultdict(int)
    ious: dict[str, list[float]] = defaultdict(list)
    found = set()
    for _, records in store.iter_records(records_dir):
        for record in records:
            found.add(record["id"])
            statuses[record.get("review_status") or "unreviewed"] += 1
            if "review_iou" in (record.get("scores") or {}):
                ious[record.get("edit_type") or "unknown"].append(record["scores"]["review_iou"])
    per_type = {t: {"n": len(v), "mean_iou": sum(v) / len(v), "min_iou": min(v)} for t, v in sorted(ious.items())}
    return {
        "reviews": len(reviews),
        "reviews_without_record": len(set(reviews) - found),
        "status": dict(sorted(statuses.items())),
        "iou_by_edit_type": per_type,
    }
