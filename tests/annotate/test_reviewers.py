"""Several reviewers of one task: every annotation kept, agreement, the resolve policies, conflicts, the report."""
from __future__ import annotations

import json

import numpy as np
import pytest

from annotate import project, reviewers
from annotate.merge import merge_step, review_metrics
from annotate.reviewers import ReviewPolicy
from editkit import rle, schema, store
from tests.support.numerics import assert_close

H, W = 20, 20


def _mask(rows: slice, cols: slice) -> np.ndarray:
    mask = np.zeros((H, W), dtype=bool)
    mask[rows, cols] = True
    return mask


PREDICTED = _mask(slice(2, 12), slice(2, 12))  # 100 px
CLOSE = _mask(slice(2, 12), slice(2, 13))  # IoU 100/110 = 0.909 with PREDICTED
FAR = _mask(slice(2, 6), slice(2, 12))  # IoU 0.4 with PREDICTED


def _review(who: str, at: str, choice: str, mask: np.ndarray | None = None, sample: str = "s", aid: int = 0) -> dict:
    return {"sample_id": sample, "reviewer": who, "updated_at": at, "annotation_id": aid, "choice": choice,
            "comment": "", "mask": None if mask is None else rle.encode(mask)}


def test_agreeing_reviewers_decide_by_the_latest():
    reviews = [_review("ann", "2026-01-01T10", "fixed", CLOSE), _review("bob", "2026-01-01T09", "accept")]
    resolution = reviewers.resolve(reviews, PREDICTED)
    assert resolution.how == "agreed" and resolution.review["reviewer"] == "ann"
    [pair] = resolution.pairs
    assert pair["verdicts_agree"] and pair["agree"]
    assert_close(pair["iou"], 100 / 110, accumulations=1, why="one division of pixel counts")


def test_disagreement_waits_for_the_lead_under_adjudicate():
    ann = _review("ann", "2026-01-01T10", "fixed", FAR)
    bob = _review("bob", "2026-01-01T11", "accept")
    policy = ReviewPolicy(lead="lead@x")
    resolution = reviewers.resolve([ann, bob], PREDICTED, policy)
    assert resolution.conflict and resolution.review is None
    assert_close(resolution.pairs[0]["iou"], 0.4, accumulations=1, why="one division of pixel counts")
    lead_early = _review("lead@x", "2026-01-01T09", "reject")
    assert reviewers.resolve([ann, bob, lead_early], PREDICTED, policy).conflict  # saved before the others
    lead = _review("lead@x", "2026-01-01T12", "fixed", FAR)
    resolved = reviewers.resolve([ann, bob, lead], PREDICTED, policy)
    assert resolved.how == "adjudicated" and resolved.review is lead
    # the other policies on the same disagreement
    assert reviewers.resolve([ann, bob], PREDICTED, ReviewPolicy(resolve="latest")).review is bob
    assert reviewers.resolve([ann, bob, lead_early], PREDICTED, ReviewPolicy("lead", "lead@x")).review is lead_early
    assert reviewers.resolve([ann, bob], PREDICTED, ReviewPolicy("lead", "lead@x")).review is bob  # no lead: latest
    assert reviewers.resolve([ann, bob], PREDICTED, ReviewPolicy(resolve="consensus")).conflict  # 1 against 1
    cat = _review("cat", "2026-01-01T08", "fixed", CLOSE)  # agrees with bob (both about the prediction)
    majority = reviewers.resolve([ann, bob, cat], PREDICTED, ReviewPolicy(resolve="consensus"))
    assert majority.how == "majority" and majority.review is bob


def test_verdicts_that_differ_conflict_and_a_reviewers_own_update_counts_once():
    ann_old = _review("ann", "2026-01-01T10", "reject", aid=1)
    bob = _review("bob", "2026-01-01T11", "accept", aid=2)
    assert not reviewers.resolve([ann_old, bob], PREDICTED).pairs[0]["verdicts_agree"]
    assert reviewers.resolve([ann_old, bob], PREDICTED).conflict
    ann_new = _review("ann", "2026-01-01T12", "accept", aid=3)  # ann changes her mind: her latest counts
    resolution = reviewers.resolve([ann_old, bob, ann_new], PREDICTED)
    assert resolution.how == "agreed" and resolution.review is ann_new and len(resolution.pairs) == 1


def _records():
    return [schema.new_record(id=name, width=W, height=H, edit_type="recolor", mask=rle.encode(PREDICTED),
                              mask_source="diff") for name in ("agree", "clash", "solo")]


def test_conflicts_are_not_merged_as_reviewed_and_the_metrics_show_the_team(tmp_path):
    reviews = [_review("ann", "T1", "fixed", CLOSE, "agree"), _review("bob", "T2", "accept", None, "agree"),
               _review("ann", "T1", "fixed", FAR, "clash"), _review("bob", "T2", "accept", None, "clash"),
               _review("bob", "T3", "reject", None, "solo")]
    grouped = reviewers.by_sample(reviews)
    store.write_records(tmp_path / "in", "shard-00000", _records())
    from editkit import pipeline

    pipeline.run_stage("review", tmp_path / "in", tmp_path / "out", merge_step(grouped), progress=False)
    out = {r["id"]: r for r in store.read_records(tmp_path / "out", "shard-00000")}
    assert out["agree"]["review_status"] == "accept" and out["agree"]["scores"]["review_agreement"] == 1.0
    clash = out["clash"]
    assert clash["review_status"] == "conflict" and "review_conflict" in clash["flags"]
    assert clash["mask_source"] == "diff" and np.array_equal(rle.decode(clash["mask"]), PREDICTED)  # unreviewed
    assert clash["scores"]["review_agreement"] == 0.0 and schema.is_ok(clash)
    assert out["solo"]["status"] == schema.STATUS_REJECTED

    metrics = review_metrics(tmp_path / "out", grouped)
    assert metrics["reviewers"] == {"ann": {"annotations": 2, "samples": 2}, "bob": {"annotations": 3, "samples": 3}}
    assert metrics["open_conflicts"] == 1 and metrics["adjudication_queue"] == ["clash"]
    assert metrics["resolution"] == {"agreed": 1, "conflict": 1, "single": 1}
    overall = metrics["agreement"]["all"]
    assert overall["pairs"] == 2 and overall["verdict_agreement"] == 1.0 and overall["mask_pairs"] == 2
    assert_close(overall["mean_mask_iou"], (100 / 110 + 0.4) / 2, accumulations=3, why="mean of two IoUs")
    assert metrics["status"]["conflict"] == 1


def test_pull_keeps_every_reviewers_annotation_with_author_and_times():
    result = [{"from_name": "review", "to_name": "source", "type": "choices", "value": {"choices": ["accept"]}}]
    task = {"id": 7, "data": {"sample_id": "s"}, "annotations": [
        {"id": 1, "completed_by": 1, "created_at": "T1", "updated_at": "T1", "result": result},
        {"id": 2, "completed_by": 2, "created_at": "T2", "updated_at": "T3", "result": result},
        {"id": 3, "completed_by": 2, "was_cancelled": True, "result": []}]}
    reviews = project.reviews_from_export([task], {1: "ann@x", 2: "bob@x"})
    assert [(r["reviewer"], r["annotation_id"], r["created_at"]) for r in reviews] == [("ann@x", 1, "T1"),
                                                                                       ("bob@x", 2, "T2")]
    assert project.reviewer_name(9, {}) == "user 9" and project.reviewer_name({"email": "c@x"}) == "c@x"


@pytest.mark.parametrize("as_json", [False, True])
def test_report_command_shows_counts_agreement_and_conflicts(tmp_path, as_json):
    import yaml
    from typer.testing import CliRunner

    from annotate.cli import app
    from annotate.merge import reviews_document

    store.write_records(tmp_path / "masks", "shard-00000", _records())
    reviews = [_review("ann", "T1", "fixed", FAR, "clash"), _review("bob", "T2", "accept", None, "clash")]
    (tmp_path / "reviews.json").write_text(json.dumps(reviews_document(reviews)))
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"annotate": {"records": str(tmp_path / "masks"),
                                                   "reviews": str(tmp_path / "reviews.json")}}))
    result = CliRunner().invoke(app, ["report", "--params", str(params), *(["--json"] if as_json else [])])
    assert result.exit_code == 0, result.output
    if as_json:
        summary = json.loads(result.output)
        assert summary["adjudication_queue"] == ["clash"] and summary["agreement"]["all"]["pairs"] == 1
    else:
        assert "ann: 1 / 1" in result.output and "open conflicts (adjudicate): 1 -> adjudicate: clash" in result.output
        assert "mask IoU 0.400" in result.output


def test_a_version_2_reviews_file_reads_as_one_unknown_reviewer(tmp_path):
    from annotate.merge import load_reviews

    path = tmp_path / "v2.json"
    path.write_text(json.dumps({"schema_version": 2, "reviews": [{"sample_id": "s", "choice": "accept", "mask": None,
                                                                 "updated_at": "T1"}]}))
    [review] = load_reviews(path)["s"]
    assert review["reviewer"] == "unknown" and review["created_at"] is None and review["choice"] == "accept"


def test_an_annotation_updated_in_place_keeps_both_versions_and_an_unpulled_one_is_reported():
    before = _review("ann", "T1", "accept", None, "s", aid=5)
    after = {**_review("bob", "T2", "fixed", FAR, "s", aid=5), "edited_over": "ann"}
    kept = project.with_earlier([before], [after])  # pull after bob updated ann's annotation in place
    assert [(r["reviewer"], r["choice"]) for r in kept] == [("ann", "accept"), ("bob", "fixed")]
    assert project.with_earlier([before], [{**before, "updated_at": "T3", "choice": "reject"}])[0]["choice"] == "reject"
    assert project.with_earlier([before], []) == []  # deleted on the server: gone
    grouped = reviewers.by_sample(kept)
    resolutions = {sid: reviewers.resolve(group, PREDICTED) for sid, group in grouped.items()}
    assert reviewers.summary(resolutions, kept)["overwritten_before_pull"] == []
    unpulled = reviewers.summary({"s": reviewers.resolve([after], PREDICTED)}, [after])
    assert unpulled["overwritten_before_pull"] == ["s"]
