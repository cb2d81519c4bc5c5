"""Merging reviews into records: accept / fixed / reject / missing / invalid."""
from __future__ import annotations

import json

import numpy as np

from annotate.merge import load_reviews, merge_step, review_metrics
from editkit import pipeline, rle, schema, store
from tests.support.numerics import assert_close


def _records():
    mask = np.zeros((6, 8), dtype=bool)
    mask[1:4, 2:6] = True
    return [schema.new_record(id=name, width=8, height=6, edit_type="recolor", mask=rle.encode(mask), mask_source="diff")
            for name in ("a", "b", "c", "d", "e")], mask


def _merge_inputs(tmp_path, annotate: dict | None = None, records: str = "masks", reviews: str = "reviews.json",
                  comment: str = "blurry"):
    """The 5 records in ``records``, a review rejecting ``a`` in ``reviews``, and a params.yaml whose ``annotate``
    section is ``annotate`` (default: those inputs, out ``review/``, metrics ``m.json``); returns the params path."""
    import yaml

    store.write_records(tmp_path / records, "shard-00000", _records()[0])
    (tmp_path / reviews).write_text(json.dumps([{"sample_id": "a", "choice": "reject", "comment": comment}]))
    if annotate is None:
        annotate = {"records": str(tmp_path / records), "reviews": str(tmp_path / reviews),
                    "out": str(tmp_path / "review"), "metrics": str(tmp_path / "m.json")}
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"annotate": annotate}))
    return params


def test_merge_statuses_masks_and_metrics(tmp_path):
    records, predicted = _records()
    fixed = predicted.copy()
    fixed[4, :] = True
    reviews = [
        {"sample_id": "a", "choice": "accept", "comment": "", "mask": rle.encode(predicted)},
        {"sample_id": "b", "choice": "fixed", "comment": "missed the row", "mask": rle.encode(fixed)},
        {"sample_id": "c", "choice": "reject", "comment": "edit failed", "mask": None},
        {"sample_id": "e", "choice": "fixed", "comment": "", "mask": rle.full(3, 3)},  # wrong size: unusable
        {"sample_id": "zz", "choice": "accept", "comment": "", "mask": None},  # no such record
    ]
    path = tmp_path / "reviews.json"
    path.write_text(json.dumps(reviews))
    store.write_records(tmp_path / "in", "shard-00000", records)
    loaded = load_reviews(path)
    pipeline.run_stage("review", tmp_path / "in", tmp_path / "out", merge_step(loaded), progress=False)
    out = {r["id"]: r for r in store.read_records(tmp_path / "out", "shard-00000")}

    assert out["a"]["review_status"] == "accept" and out["a"]["mask_source"] == "diff"
    assert np.array_equal(rle.decode(out["a"]["mask"]), predicted)
    assert out["b"]["review_status"] == "fixed" and out["b"]["mask_source"] == "human"
    assert np.array_equal(rle.decode(out["b"]["mask"]), fixed)
    assert np.array_equal(rle.decode(out["b"]["mask_predicted"]), predicted)
    expected_iou = (predicted & fixed).sum() / (predicted | fixed).sum()
    assert_close(out["b"]["scores"]["review_iou"], expected_iou, accumulations=1,
                 why="IoU: one division of pixel counts")
    assert out["c"]["status"] == schema.STATUS_REJECTED and out["c"]["reject_stage"] == "review"
    assert "edit failed" in out["c"]["reject_reason"]
    assert out["d"]["review_status"] is None and schema.is_ok(out["d"])  # missing review: passes through
    assert "review_invalid" in out["e"]["flags"] and out["e"]["mask_source"] == "diff"

    metrics = review_metrics(tmp_path / "out", loaded)
    assert metrics["status"] == {"accept": 1, "fixed": 1, "reject": 1, "unreviewed": 2}
    assert metrics["reviews_without_record"] == 1
    assert metrics["iou_by_edit_type"]["recolor"]["n"] == 2
    assert_close(metrics["iou_by_edit_type"]["recolor"]["mean_iou"], (1 + expected_iou) / 2, accumulations=2,
                 why="a mean of 2 IoUs")


def test_no_reviews_file_means_pass_through(tmp_path):
    assert load_reviews(tmp_path / "missing.json") == {}
    records, _ = _records()
    assert merge_step({})(records) == records


def test_merge_command_writes_records_and_metrics(tmp_path):
    from typer.testing import CliRunner

    from annotate.cli import app

    params = _merge_inputs(tmp_path)
    result = CliRunner().invoke(app, ["merge", "--params", str(params)])
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert metrics["status"] == {"reject": 1, "unreviewed": 4}
    assert store.count_records(tmp_path / "review") == 5


def test_merge_command_options_override_params(tmp_path):
    """The benchmarks' review stages point the same command at other records/reviews via options."""
    from typer.testing import CliRunner

    from annotate.cli import app

    params = _merge_inputs(tmp_path, {"records": str(tmp_path / "nowhere")}, records="bench", reviews="r.json",
                           comment="wrong object")
    result = CliRunner().invoke(app, ["merge", "--params", str(params), "--records", str(tmp_path / "bench"),
                                      "--reviews", str(tmp_path / "r.json"), "--out", str(tmp_path / "out"),
                                      "--metrics", str(tmp_path / "m.json")])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "m.json").read_text())["status"] == {"reject": 1, "unreviewed": 4}
    assert not (tmp_path / "nowhere").exists() and store.count_records(tmp_path / "out") == 5


def test_merge_command_commits_its_metrics_with_the_records(tmp_path, monkeypatch):
    """The review stage's metrics are part of the records' atomic commit: a kill can never leave metrics that
    describe other records (the same journal as the curate stages)."""
    from typer.testing import CliRunner

    from annotate.cli import app
    from editkit import atomic

    params = _merge_inputs(tmp_path)
    seen = []
    real = atomic._commit
    monkeypatch.setattr(atomic, "_commit", lambda moves: (seen.append([str(m[1]) for m in moves]), real(moves)))
    result = CliRunner().invoke(app, ["merge", "--params", str(params)])
    assert result.exit_code == 0, result.output
    assert seen == [[str(tmp_path / "review"), str(tmp_path / "m.json")]]
    assert json.loads((tmp_path / "m.json").read_text())["status"] == {"reject": 1, "unreviewed": 4}
