"""The masks stage on a small ingested built-in sample (H1's session fixture): masks, flags, metrics, CLI."""
from __future__ import annotations

import json

import numpy as np
from typer.testing import CliRunner

from editkit import rle, schema, store
from curate.stages.masks import IOU_SCORE, MasksParams, diff_step, run


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
        assert abs(r["scores"]["diff_area"] - mask.mean()) < 1e-9
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
