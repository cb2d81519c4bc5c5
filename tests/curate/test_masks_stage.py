"""The masks stage on a small ingested built-in sample (H1's session fixture): masks, flags, metrics, CLI."""
from __future__ import annotations

import json

import numpy as np
from typer.testing import CliRunner

from editkit import rle, schema, store
from curate.stages.masks import IOU_SCORE, MasksParams, diff_step, run
from tests.support.numerics import assert_close


def test_stage_writes_masks_and_metrics(sample_ingest_dir, tmp_path):
    out = tmp_path / "masks" / "records"
    metrics = run(MasksParams(), sample_ingest_dir / "records", sample_ingest_dir / "images", out)
    records = [r for _, shard in store.iter_records(out) for r in shard]
    assert metrics["records_in"] == metrics["records_out"] == len(records) > 0  # nothing dropped
    ok = [r for r in records if schema.is_ok(r)]
    assert ok and all(r["mask_source"] in ("diff", "whole") and r["mask"] is not None for r in ok)
    for r in ok:
        mask = rle.decode(r["mask"])
        assert mask.shape == (r["height"], r["width"])
        assert_close(r["scores"]["diff_area"], mask.mean(), accumulations=mask.size,
                     why="a float64 mean of the mask's pixels, in another order")
        assert r["scores"][IOU_SCORE] == rle.iou(mask, rle.decode(r["gt_mask"]))
    styles = [r for r in ok if r["edit_type"] == "style"]
    assert styles and sum(r["mask_source"] == "whole" for r in styles) >= len(styles) // 2
    assert metrics["with_gt"] == len(ok)
    assert metrics["mean_iou"] == round(float(np.mean([r["scores"][IOU_SCORE] for r in ok])), 4)
    assert metrics["mean_iou"] >= 0.8  # 128 px fixture; the 512 px default sample reaches >= 0.9
    assert set(metrics["by_edit_type"]) == {r["edit_type"] for r in ok}


def test_records_without_edited_image_are_flagged_and_bad_images_rejected(sample_ingest_dir):
    shard = store.list_shards(sample_ingest_dir / "records")[0]
    records = store.read_records(sample_ingest_dir / "records", shard)[:3]
    images = store.ImageStore(sample_ingest_dir / "images").shard(shard)
    records[0]["has_edited"] = False  # a benchmark item
    records[1]["id"] = "not-in-the-shard"
    out = diff_step(records, images, MasksParams())
    assert len(out) == 3
    assert "no_edited_image" in out[0]["flags"] and schema.is_ok(out[0]) and out[0]["mask_source"] == "none"
    assert out[1]["status"] == "rejected" and "cannot decode" in out[1]["reject_reason"]
    assert out[2]["mask_source"] in ("diff", "whole")


def test_cli_writes_metrics_json(sample_ingest_dir, tmp_path):
    from curate.cli import app

    params = tmp_path / "params.yaml"
    params.write_text("masks:\n  mode: diff\n  diff: {threshold: 10.0}\n")
    metrics_file = tmp_path / "metrics" / "masks.json"
    result = CliRunner().invoke(app, ["masks", "--params", str(params), "--input", str(sample_ingest_dir / "records"),
                                      "--images", str(sample_ingest_dir / "images"), "--out",
                                      str(tmp_path / "out"), "--metrics", str(metrics_file)])
    assert result.exit_code == 0, result.output
    assert "mean_iou" in json.loads(metrics_file.read_text())
    params.write_text("masks:\n  mode: nonsense\n")
    bad = CliRunner().invoke(app, ["masks", "--params", str(params)])
    assert bad.exit_code != 0


# ---------------------------------------------------------------- per-type dilation of the final mask
def test_dilation_matches_a_euclidean_distance_reference():
    """A disc of radius r grows the mask to every pixel within distance r of it (scipy's exact EDT)."""
    from scipy import ndimage

    from curate.masks.dilation import dilate_records

    rng = np.random.default_rng(0)
    mask = np.zeros((60, 80), bool)
    mask[20:35, 25:50] = True
    mask[rng.integers(0, 60, 6), rng.integers(0, 80, 6)] = True  # specks, some near the border
    records = []
    for rid, edit_type, source in [("r", "replace", "diff"), ("a", "action", "fused"), ("c", "recolor", "diff"),
                                   ("g", "replace", "gt"), ("w", "replace", "whole")]:
        record = schema.new_record(id=rid, image_shard="s", width=80, height=60, edit_type=edit_type)
        record.update(mask=rle.encode(mask), mask_source=source)
        records.append(record)
    out = {r["id"]: r for r in dilate_records(records, {"replace": 4, "action": 2})}
    for rid, radius in (("r", 4), ("a", 2)):
        expected = ndimage.distance_transform_edt(~mask) <= radius
        np.testing.assert_array_equal(rle.decode(out[rid]["mask"]), expected)
        assert out[rid]["scores"]["mask_dilate_px"] == radius
    for rid in ("c", "g", "w"):  # no radius for recolor; supplied and whole-image masks are never changed
        np.testing.assert_array_equal(rle.decode(out[rid]["mask"]), mask)
        assert "mask_dilate_px" not in (out[rid]["scores"] or {})


def test_dilate_params_are_checked():
    import pytest

    assert MasksParams(dilate={"replace": 8, "action": 0}).dilate == {"replace": 8}
    with pytest.raises(ValueError, match="unknown edit type.*motion.*`action`"):
        MasksParams(dilate={"motion": 8})
    with pytest.raises(ValueError, match="masks.dilate.replace must be an int >= 0"):
        MasksParams(dilate={"replace": -1})


def test_stage_dilates_per_type_and_default_leaves_masks_alone(sample_ingest_dir, tmp_path):
    plain = run(MasksParams(), sample_ingest_dir / "records", sample_ingest_dir / "images", tmp_path / "plain")
    grown = run(MasksParams(dilate={"add": 5}), sample_ingest_dir / "records", sample_ingest_dir / "images",
                tmp_path / "grown")
    assert "dilate" not in plain and grown["dilate"] == {"add": 5}
    before = {r["id"]: r for _, s in store.iter_records(tmp_path / "plain") for r in s}
    after = {r["id"]: r for _, s in store.iter_records(tmp_path / "grown") for r in s}
    assert grown["counts"]["dilated"] == sum(1 for r in before.values() if r["edit_type"] == "add"
                                             and schema.is_ok(r) and r["mask_source"] == "diff")
    for rid, record in after.items():
        if record["edit_type"] == "add" and record["mask_source"] == "diff":
            old, new = rle.decode(before[rid]["mask"]), rle.decode(record["mask"])
            assert (new | old).sum() == new.sum() > old.sum()  # grown, never shrunk
        else:
            assert record["mask"] == before[rid]["mask"]
