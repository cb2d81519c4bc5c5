"""Merge human reviews into records: the `review` DVC stage (``editkit annotate merge``). Needs no server.

Input: the committed reviews file (``reviews/masks.json``, written by ``editkit annotate pull``; ``[]`` until the first
pull), a list of ``{"sample_id", "reviewer", "choice", "comment", "mask" (COCO RLE or null), "task_id",
"annotation_id", "created_at", "updated_at"}``, every reviewer's annotations side by side. Several reviewers of one
sample are resolved by ``annotate.review`` (:mod:`annotate.reviewers`): agreeing reviewers decide; disagreeing ones
(by default) leave the record unchanged with ``review_status="conflict"`` until the lead adjudicates.

The painted mask is the truth; the ticked choice only decides what a record without a changed mask means.
Per record (nothing is dropped):

* no review                         -> unchanged, ``review_status`` None
* ``reject``                        -> rejected by stage ``review``, reason ``reviewer rejected: <comment>``
* ``empty`` ("the edit region is empty") -> ``mask`` = all-False, ``review_status="empty"``, ``mask_source="human"``
  (select's ``mask_area_min`` then rejects region edits downstream). Contradicted by a painted mask that differs
  from the prediction: flagged ``review_invalid``, unchanged.
* painted mask differs from the prediction (whatever was ticked: ``accept``, ``fixed`` or nothing)
                                    -> a correction: ``mask`` = painted, ``review_status="fixed"``,
                                       ``mask_source="human"``, the old mask in ``mask_predicted``
* painted mask equals the prediction, or ``accept`` with no brush region -> ``review_status="accept"``, mask kept
* ``fixed`` with no brush region, an unknown choice, a mask of the wrong size or an unreadable one (``invalid`` set by
  pull) -> unchanged, flagged ``review_invalid``

Score ``review_iou`` = IoU(predicted, reviewed). ``metrics/review.json`` counts statuses, ticked choice -> status
(so "accept" ticked over a painted correction is visible), and the mean IoU per edit type.
"""
from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from annotate import reviewers
from annotate.reviewers import ReviewPolicy
from editkit import rle, schema, schema_versions

STAGE = "review"
CHOICES = ("accept", "fixed", "empty", "reject")


def latest_per_sample(reviews: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """sample_id -> its most recently saved review (whoever made it)."""
    return {sid: reviewers.latest(group) for sid, group in reviewers.by_sample(reviews).items()}


def reviews_document(reviews: list[dict[str, Any]]) -> dict[str, Any]:
    """The reviews file's content: ``{"schema_version": N, "reviews": [...]}`` (:mod:`editkit.schema_versions`)."""
    return schema_versions.stamp("reviews", {"reviews": reviews})


def load_reviews(path: str | Path) -> dict[str, list[dict[str, Any]]]:
    """sample_id -> every review of it (each with its ``reviewer``). A missing file means no reviews yet. An older
    reviews version (a bare list: version 1) is migrated; a newer one is refused in one line."""
    path = Path(path)
    if not path.exists():
        return {}
    document = schema_versions.migrate("reviews", json.loads(path.read_text()), where=path)
    reviews = document.get("reviews") if isinstance(document, dict) else document
    if not isinstance(reviews, list) or not all(isinstance(r, dict) and "sample_id" in r for r in reviews):
        raise ValueError(f"{path} must hold a JSON list of reviews with a sample_id each (run `editkit annotate pull`)")
    return reviewers.by_sample(reviews)


def _as_lists(reviews: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """Accept sample_id -> one review (a single reviewer) as well as sample_id -> reviews."""
    return {sid: (group if isinstance(group, list) else [group]) for sid, group in reviews.items()}


def _predicted(record: dict[str, Any]) -> np.ndarray | None:
    mask = record.get("mask")
    return rle.decode(mask) if mask is not None else None


def merge_reviews(record: dict[str, Any], reviews: list[dict[str, Any]] | None,
                  policy: ReviewPolicy | None = None) -> dict[str, Any]:
    """Resolve the reviews of one record by the policy (:mod:`annotate.reviewers`) and apply the outcome."""
    if not reviews or not schema.is_ok(record):
        return record
    resolution = reviewers.resolve(reviews, _predicted(record), policy)
    if resolution.pairs:
        record["scores"] = {**record["scores"], "review_agreement": float(np.mean([p["agree"] for p in resolution.pairs]))}
    if resolution.conflict:  # waits for adjudication: the record stays unreviewed
        record["review_status"] = "conflict"
        schema.add_flag(record, "review_conflict")
        return record
    return merge_record(record, resolution.review)


def _painted(review: dict[str, Any], record: dict[str, Any]) -> tuple[np.ndarray | None, bool]:
    """(painted mask or None, whether its size fits the record)."""
    reviewed = review.get("mask")
    if reviewed is None:
        return None, True
    if list(reviewed["size"]) != [record.get("height"), record.get("width")]:
        return None, False
    return rle.decode(reviewed), True


def merge_record(record: dict[str, Any], review: dict[str, Any] | None) -> dict[str, Any]:
    """Apply one review to one record (in place) and return it."""
    if review is None or not schema.is_ok(record):
        return record
    choice = review.get("choice")
    record["review_comment"] = review.get("comment") or None
    if choice == "reject":
        record["review_status"] = "reject"
        return schema.reject(record, STAGE, f"reviewer rejected: {review.get('comment') or 'no comment'}")
    painted, fits = _painted(review, record)
    if not fits or review.get("invalid") or choice not in (None, *CHOICES):
        schema.add_flag(record, "review_invalid")
        return record
    predicted_rle = record.get("mask")
    predicted = rle.decode(predicted_rle) if predicted_rle is not None else None
    changed = painted is not None and (predicted is None or not np.array_equal(painted, predicted))
    if choice == "empty":
        if changed and painted.any():
            schema.add_flag(record, "review_invalid")  # "empty" ticked over a painted correction: contradictory
            return record
        return _set_mask(record, "empty", np.zeros((record["height"], record["width"]), dtype=bool), predicted)
    if changed:
        return _set_mask(record, "fixed", painted, predicted)
    if painted is None and choice != "accept":
        schema.add_flag(record, "review_invalid")  # "fixed" (or nothing) ticked but no region: use "empty"
        return record
    record["review_status"] = "accept"
    record["mask_predicted"] = predicted_rle
    record["scores"] = {**record["scores"], "review_iou": 1.0}
    return record


def _set_mask(record: dict[str, Any], status: str, mask: np.ndarray, predicted: np.ndarray | None) -> dict[str, Any]:
    record["review_status"] = status
    record["mask_predicted"] = record.get("mask")
    record["mask"] = rle.encode(mask)
    record["mask_source"] = "human"
    if predicted is not None:
        record["scores"] = {**record["scores"], "review_iou": rle.iou(predicted, mask)}
    return record


def merge_step(reviews: dict[str, Any], policy: ReviewPolicy | None = None):
    """A pure batch -> batch step for :func:`editkit.pipeline.run_stage`."""
    grouped = _as_lists(reviews)

    def step(records: list[dict[str, Any]], _images=None) -> list[dict[str, Any]]:
        return [merge_reviews(record, grouped.get(record["id"]), policy) for record in records]

    return step


def review_metrics(records_dir: str | Path, reviews: dict[str, Any], policy: ReviewPolicy | None = None) -> dict[str, Any]:
    """Counts per review status, ticked choice -> resulting status, mean predicted-vs-reviewed IoU per edit type;
    per-reviewer counts, agreement between reviewers of one task and the open conflicts (:func:`reviewers.summary`)."""
    from editkit import store

    reviews = _as_lists(reviews)
    resolutions: dict[str, reviewers.Resolution] = {}

    statuses: dict[str, int] = defaultdict(int)
    choice_to_status: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    ious: dict[str, list[float]] = defaultdict(list)
    found, invalid = set(), 0
    for _, records in store.iter_records(records_dir):
        for record in records:
            found.add(record["id"])
            status = record.get("review_status") or "unreviewed"
            statuses[status] += 1
            invalid += "review_invalid" in (record.get("flags") or [])
            if record["id"] in reviews:
                shown = record.get("mask_predicted") if status in ("accept", "fixed", "empty") else record.get("mask")
                resolution = reviewers.resolve(reviews[record["id"]], None if shown is None else rle.decode(shown),
                                               policy)
                resolutions[record["id"]] = resolution
                if resolution.review is not None:
                    choice_to_status[str(resolution.review.get("choice"))][status] += 1
            if "review_iou" in (record.get("scores") or {}):
                ious[record.get("edit_type") or "unknown"].append(record["scores"]["review_iou"])
    per_type = {t: {"n": len(v), "mean_iou": sum(v) / len(v), "min_iou": min(v)} for t, v in sorted(ious.items())}
    return {
        "reviews": len(reviews),
        "reviews_without_record": len(set(reviews) - found),
        "status": dict(sorted(statuses.items())),
        "invalid": invalid,  # flagged review_invalid (counted as unreviewed above: their record is unchanged)
        "choice_to_status": {c: dict(sorted(s.items())) for c, s in sorted(choice_to_status.items())},
        "iou_by_edit_type": per_type,
        **reviewers.summary(resolutions, (r for sid in found & set(reviews) for r in reviews[sid])),
    }
