"""MLLM quality scores (score.quality) over the scripted chat server, and their thresholds in select: overlay,
validation, fallbacks, metrics, the funnel and the reject ledger."""
from __future__ import annotations

import base64
import io
import json
import re

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from editkit import rle, schema, store
from editkit.config import from_dict
from curate.scoring.quality import OVERLAY_ALPHA, QualityJudge, QualityParams, render_overlay
from curate.stages import score as score_stage
from curate.stages import select as select_stage
from tests.support.gt_masks import run_gt_masks
from tests.support.scripted_server import ScriptedServer


def quality_params(endpoint: str, **extra) -> QualityParams:
    return from_dict(QualityParams, {"enabled": True, "client": {"backend": "openai", "endpoint": endpoint,
                                                                 "cache_dir": "", "retries": 0}, **extra})


def images_of(request) -> list[np.ndarray]:
    out = []
    for message in request.body["messages"]:
        for part in message["content"] if isinstance(message["content"], list) else []:
            if part.get("type") == "image_url":
                data = base64.b64decode(part["image_url"]["url"].split(",", 1)[1])
                out.append(np.asarray(Image.open(io.BytesIO(data)).convert("RGB")))
    return out


def test_overlay_tints_the_mask_and_outlines_it():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)
    mask = np.zeros((40, 50), bool)
    mask[10:30, 15:35] = True
    out = render_overlay(image, mask)
    np.testing.assert_array_equal(out[~mask], image[~mask])  # outside: untouched
    outline = mask.copy()
    outline[11:29, 16:34] = False  # the 1-px border of the square (erosion by a radius-1 disc)
    assert (out[outline] == [255, 0, 0]).all()
    inner = mask & ~outline
    expected = np.rint((1 - OVERLAY_ALPHA) * image[inner].astype(float) + OVERLAY_ALPHA * np.array([255, 0, 0]))
    np.testing.assert_array_equal(out[inner], expected.astype(np.uint8))
    with pytest.raises(ValueError, match="sizes differ"):
        render_overlay(image, mask[:10])


def shard(tmp_path):
    rng = np.random.default_rng(1)
    h, w = 48, 64
    mask = np.zeros((h, w), bool)
    mask[8:40, 30:60] = True
    rows, records = [], []
    specs = [("clear", "add", "add a red ball on the right"), ("vague", "replace", "make it better"),
             ("garbage", "remove", "remove the cat"), ("bench", "recolor", "make the car blue"),
             ("nomask", "add", "add a hat")]
    for rid, edit_type, instruction in specs:
        has_edited = rid != "bench"
        rows.append({"id": rid, "source": store.encode_png(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)),
                     "edited": store.encode_png(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) if has_edited
                     else None})
        record = schema.new_record(id=rid, image_shard="shard-00000", width=w, height=h, has_edited=has_edited,
                                   instruction=instruction, edit_type=edit_type)
        if rid != "nomask":
            record.update(mask=rle.encode(mask), mask_source="diff")
        records.append(record)
    store.write_image_shard(tmp_path, "shard-00000", rows)
    return records, store.ImageShard(tmp_path / "shard-00000.parquet"), mask


def judge_reply(request):
    if "remove the cat" in request.text:  # out of range, then not an integer: unusable after the repair round
        return '{"instruction_clarity": 11, "mask_accuracy": 5, "target_prominence": 5}' \
            if "previous reply" not in request.text else \
            '{"instruction_clarity": "high", "mask_accuracy": 5, "target_prominence": 5}'
    clarity = 9 if "red ball" in request.text else 2
    return json.dumps({"instruction_clarity": clarity, "mask_accuracy": 7, "target_prominence": 8,
                       "reason": "scripted"})


def test_judge_scores_records_and_shows_the_mask_over_the_right_image(tmp_path):
    records, images, mask = shard(tmp_path)
    with ScriptedServer(judge_reply) as server:
        judge = QualityJudge(quality_params(server.url))
        out = {r["id"]: r for r in judge(records, images)}
        requests = {re.search(r"Instruction: (.*)", r.text).group(1): r for r in server.requests}
    assert out["clear"]["scores"] == {"instruction_clarity": 9.0, "mask_accuracy": 7.0, "target_prominence": 8.0}
    assert out["vague"]["scores"]["instruction_clarity"] == 2.0
    assert out["bench"]["scores"]["mask_accuracy"] == 7.0  # no edited image: source + overlay only
    assert not out["nomask"].get("scores") and "add a hat" not in requests  # no mask: nothing to judge
    garbage = out["garbage"]
    assert "quality_unscored" in garbage["flags"] and not (garbage["scores"] or {})
    meta = json.loads(garbage["meta"])["quality"]
    assert meta["status"] == "fallback:schema" and "less than or equal to 10" in meta["errors"][0]
    assert json.loads(out["clear"]["meta"])["quality"]["status"] == "ok"
    # what the judge saw: source, edited, overlay; for `add` the mask is drawn over the EDITED image
    source, edited, overlay = images_of(requests["add a red ball on the right"])
    assert "over the EDITED image" in requests["add a red ball on the right"].text
    np.testing.assert_array_equal(overlay, render_overlay(edited, mask))
    _, overlay = images_of(requests["make the car blue"])
    np.testing.assert_array_equal(overlay, render_overlay(images.source("bench"), mask))
    assert judge.counters["quality_sent"] == 5  # the 4 records with a mask, + 1 repair round for the unusable reply


def test_quality_is_off_without_an_mllm_and_the_metrics_say_so():
    assert not QualityParams().active and not QualityParams(enabled=True).active
    step = score_stage.ScoreStep(score_stage.ScoreParams(quality=QualityParams(enabled=True)))
    assert step.quality is None
    off = score_stage.quality_metrics(QualityParams(enabled=True), None)
    assert off["quality_enabled"] is False and "backend: none" in off["quality_note"]
    assert "enabled: false" in score_stage.quality_metrics(QualityParams(), None)["quality_note"]


def test_score_stage_then_select_thresholds_the_quality_scores(sample_ingest_dir, tmp_path):
    run_gt_masks(sample_ingest_dir, tmp_path / "masks", mask_source="diff")
    # clarity from the record's position in the sample: every third instruction is "unclear"
    reply = lambda r: json.dumps({"instruction_clarity": 3 if len(r.text) % 3 == 0 else 8, "mask_accuracy": 9,
                                  "target_prominence": 9})  # noqa: E731
    with ScriptedServer(reply) as server:
        params = score_stage.ScoreParams(quality=quality_params(server.url, max_side=64), workers=1)
        metrics = score_stage.run(params, tmp_path / "masks", sample_ingest_dir / "images", tmp_path / "score")
        sent = server.count
    assert metrics["quality_enabled"] and metrics["quality_model"] == "scripted"
    assert metrics["quality_requests"]["sent"] == sent > 0
    assert all(max(img.shape[:2]) <= 64 for r in server.requests for img in images_of(r))
    scored = [r for _, s in store.iter_records(tmp_path / "score") for r in s if schema.is_ok(r)]
    low = {r["id"] for r in scored if r["scores"]["instruction_clarity"] < 6}
    assert 0 < len(low) < len(scored)
    assert metrics["by_edit_type"]["all"]["mean_target_prominence"] == 9.0

    select = select_stage.SelectParams(target_size=1000, filters=select_stage.FilterParams(
        instruction_clarity_min=6, mask_accuracy_min=5, target_prominence_min=5, bg_psnr_min=None, bg_ssim_min=None,
        mask_area_min=None, mask_area_max=None, mask_components_max=None), dedupe=select_stage.DedupeParams(False))
    result = select_stage.run(select, tmp_path / "score", tmp_path / "select", tmp_path / "rejects")
    steps = {row["filter"]: row for row in result["funnel"]}
    assert steps["instruction_clarity_min"]["rejected"] == len(low)
    assert steps["mask_accuracy_min"]["rejected"] == steps["target_prominence_min"]["rejected"] == 0
    reason = "select: instruction_clarity_min: instruction_clarity < 6"
    assert result["rejected_by_reason"][reason] == len(low)
    ledger = pq.read_table(tmp_path / "rejects" / "rejects.parquet").to_pylist()
    assert {row["id"] for row in ledger if row["reason"] == reason} == low


def test_quality_filters_are_skipped_when_no_record_has_the_scores(tmp_path):
    records = [schema.new_record(id=f"r{i}", edit_type="add", scope="local",
                                 scores={"mask_area": 0.1, "bg_psnr": 30.0, "bg_ssim": 0.9}) for i in range(4)]
    store.write_records(tmp_path / "score", "shard-00000", records)
    select = select_stage.SelectParams(target_size=4, filters=select_stage.FilterParams(instruction_clarity_min=6))
    result = select_stage.run(select, tmp_path / "score", tmp_path / "out", tmp_path / "rejects")
    assert "instruction_clarity_min" in result["skipped_filters"] and result["selected"] == 4
