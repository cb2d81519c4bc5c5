"""Grounded masks with tiny random Grounding-DINO + SAM2 saved to a temp dir and loaded with from_pretrained."""
import json

import numpy as np
import pytest

from editkit import rle, schema, store
from editkit.config import from_dict
from curate.masks.refine import RefineParams
from curate.masks.grounded import GroundedMasker, GroundingParams, WeightsUnavailableError
from curate.masks.grounded_step import grounded_step, refine_grounded
from tests.support.numerics import assert_close
from tests.support.tiny.grounding_dino import build_tiny_grounding_dino

SIZES = [(140, 200), (160, 130), (128, 128)]


@pytest.fixture(scope="module")
def tiny_dirs(tmp_path_factory, tiny_sam2_dir):
    root = tmp_path_factory.mktemp("grounding_models")
    return build_tiny_grounding_dino(root / "gdino"), tiny_sam2_dir


def make_params(tiny_dirs, **overrides):
    detector, segmenter = tiny_dirs
    values = dict(detector=str(detector), segmenter=str(segmenter), device="cpu", batch_size=4, progress=False,
                  box_threshold=0.0, text_threshold=0.0, max_boxes=3)
    values.update(overrides)
    return from_dict(GroundingParams, values, "masks.grounding")


@pytest.fixture(scope="module")
def masker(tiny_dirs):
    return GroundedMasker(make_params(tiny_dirs))


def images(seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in SIZES]


def test_tiny_checkpoints_load_from_disk_on_cpu_fp32(masker):
    assert masker.device.type == "cpu" and masker.autocast_dtype is None
    assert type(masker.detector).__name__ == "GroundingDinoForObjectDetection"
    assert type(masker.segmenter).__name__ == "Sam2Model"


def test_batch_gives_masks_at_original_size_and_boxes_inside(masker):
    results = masker.ground_batch(images(), [["cat"], ["red car", "dog"], []])
    for (h, w), result in zip(SIZES, results):
        assert result.mask.shape == (h, w) and result.mask.dtype == bool
    assert not results[2].mask.any() and results[2].boxes == []  # no phrases: nothing grounded, nothing run
    for (h, w), result in zip(SIZES[:2], results[:2]):
        assert 1 <= len(result.boxes) <= 3 and len(result.scores) == len(result.boxes) == len(result.labels)
        assert result.scores == sorted(result.scores, reverse=True)
        boxes = np.array(result.boxes)
        assert (boxes[:, 0] >= 0).all() and (boxes[:, 2] <= w).all() and (boxes[:, 3] <= h).all()


@pytest.mark.parity
def test_batched_equals_one_image_at_a_time(masker):
    """Batching must not change results: same-size images so padding cannot differ."""
    rng = np.random.default_rng(1)
    imgs = [rng.integers(0, 256, (150, 150, 3), dtype=np.uint8) for _ in range(3)]
    phrases = [["cat"], ["dog"], ["hat"]]
    batched = masker.ground_batch(imgs, phrases)
    single = [masker.ground_batch([image], [p])[0] for image, p in zip(imgs, phrases)]
    for b, s in zip(batched, single):
        # the tiny Grounding DINO (d_model 32, 1 + 2 layers) and its backbone: about 32 × 32 chained float32 sums
        assert_close(b.boxes, s.boxes, dtype=np.float32, accumulations=32 * 32,
                     why="a batch of 3 vs one image: batch-dependent kernel blocking, boxes in pixels")
        assert_close(b.scores, s.scores, dtype=np.float32, accumulations=32 * 32, scale=1.0,
                     why="a batch of 3 vs one image: batch-dependent kernel blocking, probabilities")
        assert rle.iou(b.mask, s.mask) > 0.99


def test_streaming_ground_keeps_order(masker):
    imgs = images(2)
    out = list(masker.ground(zip(imgs, [["cat"]] * 3), total=3))
    assert [r.mask.shape for r in out] == SIZES


def test_missing_weights_message_names_model_place_and_diff_mode(tiny_dirs, tmp_path):
    with pytest.raises(WeightsUnavailableError) as err:
        GroundedMasker(make_params(tiny_dirs, detector=str(tmp_path / "nowhere")))
    message = str(err.value)
    assert "detector" in message and str(tmp_path / "nowhere") in message and "masks: mode: diff" in message
    with pytest.raises(WeightsUnavailableError) as err:  # a hub id that is not in the cache, hub not contacted
        GroundedMasker(make_params(tiny_dirs, segmenter="facebook/sam2.1-hiera-large", local_files_only=True))
    message = str(err.value)
    assert "segmenter" in message and "facebook/sam2.1-hiera-large" in message and "Hugging Face cache" in message
    assert "masks.grounding.segmenter" in message and "masks: mode: diff" in message


def test_grounded_masks_are_refined_with_the_shared_helpers():
    mask = np.zeros((100, 100), bool)
    mask[20:60, 20:60] = True
    mask[30:33, 30:33] = False  # a 9-px hole: filled (limit 2% of the image)
    mask[90, 90] = True  # a 1-px speck: removed (min component 0.05% = 5 px)
    params = from_dict(GroundingParams, {"refine": {"fill_holes": True, "max_hole_fraction": 0.02,
                                                    "min_component_fraction": 0.0005, "dilate_px": 1}})
    expected = np.zeros((100, 100), bool)
    expected[19:61, 20:60] = True  # the 40x40 square dilated by a radius-1 disc: a plus-shaped border
    expected[20:60, 19:61] = True
    np.testing.assert_array_equal(refine_grounded(mask, params), expected)
    empty = np.zeros((8, 8), bool)
    assert not refine_grounded(empty, params).any()


def test_bad_image_is_a_clear_error(masker):
    with pytest.raises(ValueError, match="HxWx3 uint8"):
        masker.ground_batch([np.zeros((32, 32), np.uint8)], [["cat"]])


# ---------------------------------------------------------------- the step on records in an image shard
def shard_with_records(tmp_path, corrupt=()):
    rng = np.random.default_rng(3)
    h, w = 140, 180
    specs = [  # (id, edit_type, has_edited, instruction)
        ("add", "add", True, "add a red hat to the man"),
        ("remove", "remove", True, "remove the dog"),
        ("replace", "replace", True, "replace the cat with a dog"),
        ("background", "background", True, "change the background to a beach"),
        ("style", "style", True, "make it look like a painting"),
        ("unknown", None, True, "do something to the cup"),
        ("bench", "recolor", False, "make the car red"),
        ("bench_add", "add", False, "add a ball"),
        ("nophrase", "remove", True, "remove it"),
        ("rejected", "remove", True, "remove the tree"),
    ]
    rows, records = [], []
    diff = np.zeros((h, w), bool)
    diff[30:90, 40:120] = True
    for rid, edit_type, has_edited, instruction in specs:
        source = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        edited = rng.integers(0, 256, (h, w, 3), dtype=np.uint8) if has_edited else None
        rows.append({"id": rid, "source": b"not an image" if rid in corrupt else store.encode_png(source),
                     "edited": None if edited is None else store.encode_png(edited)})
        record = schema.new_record(id=rid, image_shard="shard-00000", width=w, height=h, has_edited=has_edited,
                                   instruction=instruction, edit_type=edit_type, meta=json.dumps({"diff": "x"}))
        if has_edited:
            record.update(mask=rle.encode(diff), mask_source="diff")
        records.append(record)
    schema.reject(records[-1], "ingest", "corrupt image")
    store.write_image_shard(tmp_path, "shard-00000", rows)
    return records, store.ImageShard(tmp_path / "shard-00000.parquet"), diff


def test_step_with_nothing_found_keeps_diff_and_flags(tiny_dirs, tmp_path):
    records, shard, diff = shard_with_records(tmp_path)
    params = make_params(tiny_dirs, box_threshold=1.0)  # boxes need score > 1.0: nothing is ever detected
    out = {r["id"]: r for r in grounded_step(records, shard, params)}  # the step loads its own masker
    assert len(out) == len(records)
    for rid in ("add", "remove", "replace", "background", "unknown"):
        assert out[rid]["mask_source"] == "diff" and "grounding_empty" in out[rid]["flags"], rid
        np.testing.assert_array_equal(rle.decode(out[rid]["mask"]), diff)
        meta = json.loads(out[rid]["meta"])
        assert meta["diff"] == "x" and meta["grounding"]["phrases"]  # existing meta kept, decision traceable
    assert json.loads(out["background"]["meta"])["grounding"]["phrases"] == ["main subject"]
    assert "edit_type_unknown" in out["unknown"]["flags"]
    assert out["style"]["mask_source"] == "whole" and rle.decode(out["style"]["mask"]).all()
    assert out["bench"]["mask"] is None and out["bench"]["mask_source"] == "none"
    assert "grounding_empty" in out["bench"]["flags"]
    assert "grounding_needs_edited" in out["bench_add"]["flags"] and out["bench_add"]["mask"] is None
    assert "no_target_phrases" in out["nophrase"]["flags"] and out["nophrase"]["mask_source"] == "diff"
    assert out["rejected"]["reject_reason"] == "corrupt image" and out["rejected"]["mask_source"] == "diff"
    assert "grounding_empty" not in out["rejected"]["flags"]  # rejected records are passed on untouched


def test_step_with_detections_lands_in_schema(masker, tiny_dirs, tmp_path):
    records, shard, diff = shard_with_records(tmp_path)
    out = grounded_step(records, shard, make_params(tiny_dirs, min_iou=0.0), masker)
    by_id = {r["id"]: r for r in out}
    for rid in ("add", "remove", "replace", "background", "unknown"):
        record = by_id[rid]
        mask = rle.decode(record["mask"])
        assert mask.shape == (140, 180) and mask.dtype == bool
        assert record["mask_source"] in ("fused", "diff") and record["mask_source"] in schema.MASK_SOURCES
        assert 0.0 <= record["scores"]["grounding_diff_iou"] <= 1.0
        assert record["scores"]["grounding_boxes"] >= 1
        if record["mask_source"] == "fused":  # min_iou=0: fused unless the rule's region was empty
            assert (mask | diff).sum() == mask.sum()  # fused always contains the diff
    assert by_id["bench"]["mask_source"] in ("grounded", "none")
    restored = {r["id"]: r for r in schema.from_table(schema.to_table(out))}
    assert restored["replace"]["mask"] == by_id["replace"]["mask"]
    assert restored["replace"]["scores"].keys() == by_id["replace"]["scores"].keys()
    for name, value in by_id["replace"]["scores"].items():
        assert_close(restored["replace"]["scores"][name], value, accumulations=1, why="an Arrow float64 round trip")


def test_step_on_built_in_sample_records(masker, tiny_dirs, sample_ingest_dir, tmp_path):
    """The real ingest output (sample photos + procedural edits); the gt mask stands in for the diff step's mask."""
    shard = store.list_shards(sample_ingest_dir / "records")[0]
    records = store.read_records(sample_ingest_dir / "records", shard)
    for record in records:
        if record["has_edited"] and record["gt_mask"] is not None:
            record.update(mask=record["gt_mask"], mask_source="diff")
    images = store.ImageStore(sample_ingest_dir / "images").shard(shard)
    out = grounded_step(records, images, make_params(tiny_dirs, min_iou=0.0), masker)
    assert [r["id"] for r in out] == [r["id"] for r in records]
    grounded_types = set()
    for record in out:
        if not schema.is_ok(record):
            continue
        assert record["mask_source"] in schema.MASK_SOURCES
        if record["mask"] is not None:
            assert rle.decode(record["mask"]).shape == (record["height"], record["width"])
        if "grounding" in (record["meta"] or ""):
            grounded_types.add(record["edit_type"])
            assert record["target_phrases"] == json.loads(record["meta"])["grounding"]["phrases"]
    assert {"add", "remove", "background"} <= grounded_types
    store.write_records(tmp_path, shard, out)  # lands in the schema
    assert [r["mask"] for r in store.read_records(tmp_path, shard)] == [r["mask"] for r in out]


def test_corrupt_image_rejects_only_its_record(masker, tiny_dirs, tmp_path):
    records, shard, _ = shard_with_records(tmp_path, corrupt=("remove",))
    out = {r["id"]: r for r in grounded_step(records, shard, make_params(tiny_dirs, batch_size=2), masker)}
    assert out["remove"]["status"] == "rejected" and out["remove"]["reject_stage"] == "masks"
    assert "cannot read the source image" in out["remove"]["reject_reason"]
    assert out["replace"]["status"] == "ok" and out["replace"]["scores"]["grounding_boxes"] >= 1


def test_run_stage_with_one_masker_for_all_shards(tiny_dirs, tmp_path):
    from curate.masks.grounded_step import make_grounded_step
    from editkit.pipeline import run_stage

    records, _, _ = shard_with_records(tmp_path / "images")
    store.write_records(tmp_path / "in", "shard-00000", records)
    step = make_grounded_step(make_params(tiny_dirs))
    stats = run_stage("masks", tmp_path / "in", tmp_path / "out", step, images_dir=tmp_path / "images", progress=False)
    assert stats.records_in == stats.records_out == len(records)
    out = store.read_records(tmp_path / "out", "shard-00000")
    assert {r["mask_source"] for r in out} <= set(schema.MASK_SOURCES)
    with pytest.raises(WeightsUnavailableError):  # loads before any shard is read: fails at once
        make_grounded_step(make_params(tiny_dirs, segmenter=str(tmp_path / "missing")))
    with pytest.raises(ValueError, match="masks.grounding.refine"):  # so does a typo in the refine knobs
        make_grounded_step(make_params(tiny_dirs, refine={"dilate": 2}))


def test_params_yaml_grounding_section_loads():
    from pathlib import Path

    from editkit.config import from_dict, read_params

    section = read_params(Path(__file__).resolve().parents[2] / "params.yaml")["masks"]
    assert section["mode"] == "diff"  # the demo runs without weights
    params = from_dict(GroundingParams, section["grounding"], "masks.grounding")
    assert params.detector == "grounding_dino" and params.detector_model == "IDEA-Research/grounding-dino-base"
    assert params.segmenter == "facebook/sam2.1-hiera-large"
    assert params.mllm.client.backend == "none" and params.mllm.prompt_version == "v1"
    assert params.refine == RefineParams()  # {}: the defaults
    legacy = GroundingParams(detector="/models/gdino")  # the older spelling: a checkpoint given as `detector`
    assert legacy.detector == "grounding_dino" and legacy.detector_model == "/models/gdino"


def test_masks_stage_grounded_mode_and_cli_message(tiny_dirs, sample_ingest_dir, tmp_path):
    """`masks.mode: grounded` through the real stage (diff step, then grounding + fusion) and its CLI."""
    from typer.testing import CliRunner

    from curate.cli import app
    from curate.stages.masks import MasksParams, run

    detector, segmenter = tiny_dirs
    grounding = {"detector": str(detector), "segmenter": str(segmenter), "device": "cpu", "progress": False,
                 "box_threshold": 0.0, "text_threshold": 0.0, "max_boxes": 2, "min_iou": 0.0}
    out = tmp_path / "out"
    metrics = run(from_dict(MasksParams, {"mode": "grounded", "grounding": grounding}), sample_ingest_dir / "records",
                  sample_ingest_dir / "images", out)
    records = [r for _, shard in store.iter_records(out) for r in shard]
    assert metrics["mode"] == "grounded" and metrics["records_out"] == len(records) > 0
    sources = {r["mask_source"] for r in records if schema.is_ok(r)}
    assert "fused" in sources and sources <= {"fused", "diff", "whole"}
    for r in records:
        if r["mask_source"] == "fused":
            assert "grounding_diff_iou" in r["scores"] and rle.decode(r["mask"]).shape == (r["height"], r["width"])

    params = tmp_path / "params.yaml"
    params.write_text(f"masks:\n  mode: grounded\n  grounding: {{detector: {tmp_path / 'no-such-model'}}}\n")
    result = CliRunner().invoke(app, ["masks", "--params", str(params), "--input", str(sample_ingest_dir / "records"),
                                      "--images", str(sample_ingest_dir / "images"), "--out", str(tmp_path / "o2"),
                                      "--metrics", str(tmp_path / "m.json")])
    assert result.exit_code == 2
    assert "no-such-model" in result.output and "masks: mode: diff" in result.output
