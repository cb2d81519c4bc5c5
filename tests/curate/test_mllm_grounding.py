"""MLLM-box grounding (masks.grounding.detector: mllm): the Qwen2.5-VL pixel convention, validation, fallbacks,
the scripted chat server, a tiny Qwen2.5-VL through the transformers backend, and the masks stage with tiny SAM2."""
from __future__ import annotations

import base64
import io
import json
import re

import numpy as np
import pytest
from PIL import Image

from editkit import rle, schema, store
from editkit.config import from_dict
from curate.masks.grounded import GroundingParams
from curate.masks.mllm_boxes import MLLMBoxDetector, MLLMGroundingParams, clean_boxes, model_view_size
from tests.support.numerics import assert_close
from tests.support.scripted_server import ScriptedServer

SIZE_RE = re.compile(r"(\d+) pixels wide and (\d+) pixels high")


@pytest.fixture(scope="module")
def tiny_sam2(tiny_sam2_dir):
    return tiny_sam2_dir  # one build per session (tests/conftest.py)


def stated_size(request) -> tuple[int, int]:
    """(width, height) the prompt tells the model its image has."""
    width, height = SIZE_RE.search(request.text).groups()
    return int(width), int(height)


def sent_image_size(request) -> tuple[int, int]:
    for message in request.body["messages"]:
        for part in message["content"] if isinstance(message["content"], list) else []:
            if part.get("type") == "image_url":
                data = base64.b64decode(part["image_url"]["url"].split(",", 1)[1])
                return Image.open(io.BytesIO(data)).size
    raise AssertionError("no image in the request")


def mllm_params(endpoint: str, **client) -> MLLMGroundingParams:
    return from_dict(MLLMGroundingParams, {"client": {"backend": "openai", "endpoint": endpoint, "cache_dir": "",
                                                      "retries": 0, **client}})


# ---------------------------------------------------------------- the coordinate convention
@pytest.mark.parametrize("max_pixels", [56 * 56, 512 * 28 * 28])
def test_model_view_size_is_what_the_qwen_processor_resizes_to(max_pixels):
    """The reference: transformers' own Qwen2-VL image processor (its patch grid x 14 px is the image it encodes)."""
    from transformers import Qwen2VLImageProcessor

    processor = Qwen2VLImageProcessor(size={"shortest_edge": 56 * 56, "longest_edge": max_pixels}, patch_size=14,
                                      merge_size=2, temporal_patch_size=2)
    for height, width in [(140, 200), (37, 500), (1000, 30), (28, 28), (13, 17), (1080, 1920), (512, 512)]:
        image = Image.new("RGB", (width, height))
        grid = processor(images=[image], return_tensors="pt")["image_grid_thw"][0].tolist()
        assert model_view_size(height, width, 56 * 56, max_pixels) == (grid[1] * 14, grid[2] * 14), (height, width)
    # What the detector sends is resized once more by the processor: the model's frame is model_view_size of it
    # (the identity unless max_pixels is about min_pixels: here 56*56 == min makes 140x200 -> 28x56 -> 56x84).
    sent = model_view_size(140, 200, 56 * 56, max_pixels)
    grid = processor(images=[Image.new("RGB", sent[::-1])], return_tensors="pt")["image_grid_thw"][0].tolist()
    assert model_view_size(*sent, 56 * 56, max_pixels) == (grid[1] * 14, grid[2] * 14)
    assert (model_view_size(*sent, 56 * 56, max_pixels) == sent) == (max_pixels > 56 * 56)
    with pytest.raises(ValueError, match="aspect ratio"):
        model_view_size(10, 2500)


def test_clean_boxes_clips_and_drops_with_reasons():
    raw = [([10, 20, 50, 60], "cat"), ([-5, 30, 120, 70], "dog"), ([float("nan"), 0, 5, 5], "x"),
           ([50, 50, 40, 60], "reversed"), ([99.5, 10, 130, 20], "outside"), ([0.1, 0.2, 0.5, 0.6], "relative")]
    boxes, labels, dropped, clipped = clean_boxes(raw, width=100, height=80)
    np.testing.assert_array_equal(boxes, [[10, 20, 50, 60], [0, 30, 100, 70]])
    assert labels == ["cat", "dog"] and clipped == 2  # "dog" and the dropped "outside" reached beyond the image
    assert len(dropped) == 4
    assert "non-finite" in dropped[0] and "reversed" in dropped[1]
    assert "degenerate" in dropped[2] and "0.50 x 10.00 px" in dropped[2]
    assert "degenerate" in dropped[3]  # normalised coordinates are not this convention: sub-pixel boxes


# ---------------------------------------------------------------- the detector over the scripted server
def test_boxes_in_the_model_view_come_back_in_image_pixels():
    """The model sees a smart_resized copy and answers in ITS pixels; we rescale to the image given."""
    target = np.array([40.0, 30.0, 120.0, 90.0])  # xyxy in the 180x140 image

    def handler(request):
        width, height = stated_size(request)
        assert sent_image_size(request) == (width, height)  # what the prompt says is what the model sees
        box = target * np.array([width / 180, height / 140] * 2)
        return "```json\n" + json.dumps([{"bbox_2d": box.round().tolist(), "label": "cat"}]) + "\n```"

    with ScriptedServer(handler) as server:
        detector = MLLMBoxDetector(mllm_params(server.url, max_pixels=64 * 28 * 28))
        [found] = detector.detect([Image.new("RGB", (180, 140))], [["cat"]], max_boxes=4)
    assert found.status == "ok" and found.labels == ["cat"] and not found.dropped
    vh, vw = found.view_size
    assert (vh % 28, vw % 28) == (0, 0) and (vh, vw) != (140, 180)
    assert_close(found.boxes[0], target, atol=180 / vw,
                 why="the judge answers in whole model-view pixels: within one, scaled back to 180 px")
    assert "cat" in server.requests[0].text and detector.stats["sent"] == 1


def test_garbage_is_repaired_or_rejected_with_a_reason():
    def handler(request):
        if '"dog"' in request.text:  # one good box, one degenerate (zero width)
            return '[{"bbox_2d": [5, 5, 40, 40], "label": "dog"}, {"bbox_2d": [9, 9, 9, 30]}]'
        if "previous reply" in request.text:  # the repair round: JSON now, but a 3-number box
            return '{"boxes": [{"bbox_2d": [1, 2, 3]}]}'
        return "I cannot see a cat."

    with ScriptedServer(handler) as server:
        detector = MLLMBoxDetector(mllm_params(server.url))
        bad, good = detector.detect([Image.new("RGB", (56, 56))] * 2, [["cat"], ["dog"]], max_boxes=4)
    assert bad.status == "fallback:schema" and len(bad.boxes) == 0
    assert "no JSON" in bad.errors[0] and "bbox_2d" in bad.errors[1]  # both attempts' reasons kept
    assert good.status == "ok" and len(good.boxes) == 1 and "degenerate" in good.dropped[0]


def test_backend_none_cannot_ground():
    from editkit.mllm.backends import MLLMError

    with pytest.raises(MLLMError, match="masks.grounding.mllm.client.backend"):
        MLLMBoxDetector(MLLMGroundingParams())


# ---------------------------------------------------------------- the tiny Qwen2.5-VL (transformers backend)
def shard(tmp_path, h=84, w=112):
    rng = np.random.default_rng(0)
    diff = np.zeros((h, w), bool)
    diff[20:60, 30:90] = True
    rows, records = [], []
    for rid, edit_type, instruction in [("replace", "replace", "replace the cat with a dog"),
                                        ("remove", "remove", "remove the dog")]:
        rows.append({"id": rid, "source": store.encode_png(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)),
                     "edited": store.encode_png(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))})
        record = schema.new_record(id=rid, image_shard="shard-00000", width=w, height=h, has_edited=True,
                                   instruction=instruction, edit_type=edit_type)
        record.update(mask=rle.encode(diff), mask_source="diff")
        records.append(record)
    store.write_image_shard(tmp_path, "shard-00000", rows)
    return records, store.ImageShard(tmp_path / "shard-00000.parquet"), diff


def test_tiny_qwen_garbage_falls_back_to_the_diff_mask(tmp_path, tiny_sam2):
    from curate.masks.grounded_step import grounded_step
    from tests.support.tiny.qwen_vl import build_tiny_qwen2_5_vl

    qwen = build_tiny_qwen2_5_vl(tmp_path / "qwen")
    params = from_dict(GroundingParams, {
        "detector": "mllm", "segmenter": str(tiny_sam2), "device": "cpu", "progress": False, "min_iou": 0.0,
        "mllm": {"client": {"backend": "transformers", "model": str(qwen), "device": "cpu", "max_tokens": 24,
                            "max_pixels": 56 * 56, "cache_dir": ""}}}, "masks.grounding")
    records, images, diff = shard(tmp_path / "images")
    out = {r["id"]: r for r in grounded_step(records, images, params)}
    for record in out.values():  # random tokens are no box list: rejected with a reason, the diff mask stays
        assert schema.is_ok(record) and record["mask_source"] == "diff"
        np.testing.assert_array_equal(rle.decode(record["mask"]), diff)
        assert {"grounding_mllm_fallback", "grounding_empty"} <= set(record["flags"])
        meta = json.loads(record["meta"])["grounding"]
        assert meta["detector"] == "mllm"
        for which in ("source", "edited") if record["id"] == "replace" else ("source",):
            assert meta[which]["status"].startswith("fallback:") and meta[which]["errors"]
        assert record["scores"]["grounding_boxes"] == 0 and "grounding_max_score" not in record["scores"]


# ---------------------------------------------------------------- the masks stage end to end
def middle_box(request):
    width, height = stated_size(request)
    return json.dumps([{"bbox_2d": [width // 4, height // 4, 3 * width // 4, 3 * height // 4], "label": "x"}])


def test_masks_stage_with_mllm_boxes_and_tiny_sam2(sample_ingest_dir, tiny_sam2, tmp_path):
    from curate.stages.masks import MasksParams, run

    with ScriptedServer(middle_box) as server:
        grounding = {"detector": "mllm", "segmenter": str(tiny_sam2), "device": "cpu", "progress": False,
                     "min_iou": 0.0, "mllm": {"client": {"backend": "openai", "endpoint": server.url,
                                                         "cache_dir": str(tmp_path / "cache")}}}
        out = tmp_path / "out"
        metrics = run(from_dict(MasksParams, {"mode": "grounded", "grounding": grounding, "dilate": {"add": 3}}),
                      sample_ingest_dir / "records", sample_ingest_dir / "images", out)
        sent = server.count
    records = [r for _, s in store.iter_records(out) for r in s]
    assert metrics["detector"] == "mllm" and metrics["mllm_requests"]["sent"] == sent > 0
    assert metrics["mllm_model"] == "scripted" and metrics["dilate"] == {"add": 3}
    grounded = [r for r in records if "grounding" in (r["meta"] or "")]
    assert grounded and {r["mask_source"] for r in records if schema.is_ok(r)} <= {"fused", "diff", "whole"}
    for record in grounded:
        meta = json.loads(record["meta"])["grounding"]
        assert meta["detector"] == "mllm" and record["scores"]["grounding_boxes"] >= 1
        for which in ("source", "edited"):
            if which in meta:
                assert meta[which]["status"] == "ok"
                for x1, y1, x2, y2 in meta[which]["boxes"]:  # the middle half, in the record's own pixels
                    assert abs((x1 + x2) / 2 - record["width"] / 2) < 6 and abs(x2 - x1 - record["width"] / 2) < 8
    adds = [r for r in records if r["edit_type"] == "add" and r["mask_source"] == "fused"]
    assert adds and all(r["scores"]["mask_dilate_px"] == 3 for r in adds)
    assert any(r["mask_source"] == "fused" for r in grounded)


def test_cli_says_what_to_set_when_no_mllm_is_configured(sample_ingest_dir, tiny_sam2, tmp_path):
    from typer.testing import CliRunner

    from curate.cli import app

    params = tmp_path / "params.yaml"
    params.write_text(f"masks:\n  mode: grounded\n  grounding: {{detector: mllm, segmenter: {tiny_sam2}}}\n")
    result = CliRunner().invoke(app, ["masks", "--params", str(params), "--input", str(sample_ingest_dir / "records"),
                                      "--images", str(sample_ingest_dir / "images"), "--out", str(tmp_path / "o"),
                                      "--metrics", str(tmp_path / "m.json")])
    assert result.exit_code == 2 and "masks.grounding.mllm.client.backend" in result.output


def test_parse_json_takes_a_bare_list_only_when_asked():
    from pydantic import BaseModel

    from editkit.mllm.structured import ParseError, parse_json
    from curate.masks.mllm_boxes import _reply_models

    class One(BaseModel):
        bbox_2d: list[float]

    text = 'Sure: [{"bbox_2d": [1, 2, 3, 4]}, {"bbox_2d": [5, 6, 7, 8]}] done'
    assert parse_json(text, One).bbox_2d == [1, 2, 3, 4]  # default: the first object, as before
    reply = parse_json(text, _reply_models(), allow_array=True)
    assert [b.bbox_2d for b in reply.boxes] == [[1, 2, 3, 4], [5, 6, 7, 8]]
    with pytest.raises(ParseError, match="object or array"):
        parse_json("nothing here", _reply_models(), allow_array=True)
