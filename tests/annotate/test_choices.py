"""Choice semantics: a painted change is a correction whatever was ticked; "empty"; latest review wins."""
from __future__ import annotations

import numpy as np

from annotate.merge import latest_per_sample, merge_record, review_metrics
from editkit import rle, schema, store
from tests.support.numerics import assert_close


def _record(mask):
    return schema.new_record(id="r", width=mask.shape[1], height=mask.shape[0], edit_type="add",
                             mask=rle.encode(mask), mask_source="diff")


def _predicted():
    mask = np.zeros((10, 12), dtype=bool)
    mask[2:6, 3:8] = True
    return mask


def test_painted_change_with_accept_ticked_is_a_correction():
    predicted = _predicted()
    painted = predicted.copy()
    painted[7:9, :] = True
    for choice in ("accept", "fixed", None):
        out = merge_record(_record(predicted), {"sample_id": "r", "choice": choice, "mask": rle.encode(painted)})
        assert out["review_status"] == "fixed" and out["mask_source"] == "human", choice
        assert np.array_equal(rle.decode(out["mask"]), painted)
        assert np.array_equal(rle.decode(out["mask_predicted"]), predicted)
        expected = (predicted & painted).sum() / (predicted | painted).sum()
        assert_close(out["scores"]["review_iou"], expected, accumulations=1, why="IoU: one division of pixel counts")


def test_unchanged_mask_with_fixed_ticked_is_an_accept():
    predicted = _predicted()
    out = merge_record(_record(predicted), {"sample_id": "r", "choice": "fixed", "mask": rle.encode(predicted)})
    assert out["review_status"] == "accept" and out["mask_source"] == "diff" and out["scores"]["review_iou"] == 1.0


def test_empty_choice_gives_an_empty_mask():
    predicted = _predicted()
    for painted in (None, predicted, np.zeros_like(predicted)):  # no region / untouched copy of the prediction
        review = {"sample_id": "r", "choice": "empty", "mask": None if painted is None else rle.encode(painted)}
        out = merge_record(_record(predicted), review)
        assert out["review_status"] == "empty" and not rle.decode(out["mask"]).any()
        assert out["mask_source"] == "human" and out["scores"]["review_iou"] == 0.0 and schema.is_ok(out)


def test_empty_choice_over_a_painted_correction_is_flagged_not_guessed():
    predicted = _predicted()
    painted = predicted.copy()
    painted[0, 0] = True
    out = merge_record(_record(predicted), {"sample_id": "r", "choice": "empty", "mask": rle.encode(painted)})
    assert "review_invalid" in out["flags"] and out["review_status"] is None
    assert np.array_equal(rle.decode(out["mask"]), predicted)


def test_reject_wins_over_paint_and_unreadable_regions_are_flagged():
    predicted = _predicted()
    out = merge_record(_record(predicted), {"sample_id": "r", "choice": "reject", "comment": "blurry",
                                            "mask": rle.encode(~predicted)})
    assert out["status"] == schema.STATUS_REJECTED and out["reject_reason"] == "reviewer rejected: blurry"
    out = merge_record(_record(predicted), {"sample_id": "r", "choice": "fixed", "mask": None, "invalid": "bad rle"})
    assert "review_invalid" in out["flags"]
    out = merge_record(_record(predicted), {"sample_id": "r", "choice": "maybe", "mask": None})
    assert "review_invalid" in out["flags"]


def test_latest_updated_at_wins_then_the_higher_annotation_id():
    reviews = [
        {"sample_id": "a", "choice": "accept", "updated_at": "2026-01-02T10:00:00.000000Z", "annotation_id": 9},
        {"sample_id": "a", "choice": "reject", "updated_at": "2026-01-02T11:00:00.000000Z", "annotation_id": 3},
        {"sample_id": "b", "choice": "accept", "updated_at": "2026-01-02T10:00:00Z", "annotation_id": 4},
        {"sample_id": "b", "choice": "fixed", "updated_at": "2026-01-02T10:00:00Z", "annotation_id": 5},
    ]
    latest = latest_per_sample(reviews)
    assert latest["a"]["choice"] == "reject" and latest["b"]["annotation_id"] == 5
    assert latest_per_sample(list(reversed(reviews))) == latest  # independent of export order


def test_metrics_show_ticked_choice_against_the_outcome(tmp_path):
    predicted = _predicted()
    painted = predicted.copy()
    painted[9, :] = True
    record = _record(predicted)
    review = {"sample_id": "r", "choice": "accept", "mask": rle.encode(painted)}
    store.write_records(tmp_path, "shard-00000", [merge_record(record, review)])
    metrics = review_metrics(tmp_path, {"r": review})
    assert metrics["choice_to_status"] == {"accept": {"fixed": 1}} and metrics["invalid"] == 0
