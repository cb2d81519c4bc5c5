"""CoCoEdit-40K in its released layout (metadata.jsonl + unpacked image/mask folders, white = KEEP) through ingest,
masks, score, select and export into a dataset the trainer reads."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from curate.sources.presets import PresetParams, names, open_preset
from curate.stages import ingest as ingest_stage
from editkit import rle, schema, store


def build_release(root, count=4, seed=0, metadata="metadata.jsonl"):
    """The unpacked release: metadata.jsonl at the root, JPEG images and PNG keep-masks (white = keep) in the
    unzipped part folders, plus broken lines of every kind."""
    rng = np.random.default_rng(seed)
    (root / "images_part1").mkdir(parents=True)
    (root / "masks_part1").mkdir()
    lines, edits = [], {}
    for k in range(count):
        h, w = 48 + 8 * k, 64
        yy, xx = np.mgrid[:h, :w]
        image = np.stack([(xx * 4 + k * 20) % 256, (yy * 5) % 256, (xx + yy) % 256], -1).astype(np.uint8)
        edit = np.zeros((h, w), bool)
        edit[5 + k : 25 + k, 10:40] = True
        keep = np.where(edit, 0, 255).astype(np.uint8)
        Image.fromarray(image).save(root / "images_part1" / f"{k:06d}.jpg", quality=95)
        Image.fromarray(np.stack([keep] * 3, -1)).save(root / "masks_part1" / f"{k:06d}.png")  # RGB, as released
        lines.append({"prompt": f"replace the box with a red ball {k}", "image": f"images_part1/{k:06d}.jpg",
                      "mask": f"masks_part1/{k:06d}.png"})
        edits[f"images_part1/{k:06d}.jpg"] = edit
    lines.append({"prompt": "escape", "image": "../outside.jpg", "mask": "masks_part1/000000.png"})
    lines.append({"prompt": "no mask", "image": "images_part1/000000.jpg"})
    lines.append({"prompt": "gone", "image": "images_part1/missing.jpg", "mask": "masks_part1/000000.png"})
    (root / "masks_part1" / "broken.png").write_bytes(b"not a png")
    lines.append({"prompt": "broken mask", "image": "images_part1/000001.jpg", "mask": "masks_part1/broken.png"})
    text = "\n".join(json.dumps(line) for line in lines) + "\n{not json\n"
    (root / metadata).write_text(text)
    return edits


def test_reader_converts_polarity_and_rejects_bad_lines(tmp_path):
    edits = build_release(tmp_path / "release")
    assert "cocoedit_40k" in names()
    source = open_preset(PresetParams(name="cocoedit_40k", path=str(tmp_path / "release")))
    assert len(source) == 9
    metrics = ingest_stage.run_ingest(source, tmp_path / "ingest", ingest_stage.IngestParams(source="preset"),
                                      progress=False)
    assert (metrics["ok"], metrics["rejected"]) == (4, 5)
    records = [r for _, shard in store.iter_records(tmp_path / "ingest" / "records") for r in shard]
    reasons = sorted(r["reject_reason"].split(":")[0] for r in records if not schema.is_ok(r))
    assert reasons == ["malformed metadata line", "malformed row", "missing source image",
                       "unreadable mask", "unsafe source path"]
    for record in (r for r in records if schema.is_ok(r)):
        assert record["has_edited"] is False and record["mask_source"] == "gt"
        np.testing.assert_array_equal(rle.decode(record["mask"]), edits[record["origin_key"]])  # white = keep


@pytest.mark.parametrize("metadata", ["train_metadata.jsonl", "metadata.jsonl"])
def test_folder_form_finds_either_metadata_name(tmp_path, metadata):
    """The release folder names its metadata train_metadata.jsonl; CoCoEdit's reader, metadata.jsonl: the folder form
    (ingest.preset.path = the folder) finds either, and the file form takes the file itself."""
    build_release(tmp_path / "release", metadata=metadata)
    for path in (tmp_path / "release", tmp_path / "release" / metadata):
        source = open_preset(PresetParams(name="cocoedit_40k", path=str(path)))
        assert len(source) == 9
        assert sum(pair.error is None for pair in source) == 4


def test_missing_release_is_clear(tmp_path):
    with pytest.raises(ValueError, match="metadata.jsonl not found"):
        open_preset(PresetParams(name="cocoedit_40k", path=str(tmp_path)))
    with pytest.raises(ValueError, match="needs the unpacked CoCoEdit-40K release"):
        open_preset(PresetParams(name="cocoedit_40k", path=""))


def test_release_through_the_pipeline_into_the_trainer(tmp_path):
    from curate.stages import export as export_stage
    from curate.stages import masks as masks_stage
    from curate.stages import score as score_stage
    from curate.stages import select as select_stage
    from train.config import DataConfig
    from train.data import EditDataset

    edits = build_release(tmp_path / "release")
    params = ingest_stage.IngestParams(source="preset", preset=PresetParams("cocoedit_40k", str(tmp_path / "release")))
    ingest_stage.run_ingest(ingest_stage.open_source(params), tmp_path / "ingest", params, progress=False)
    images = tmp_path / "ingest" / "images"
    masks_stage.run(masks_stage.MasksParams(), tmp_path / "ingest" / "records", images, tmp_path / "masks")
    score_stage.run(score_stage.ScoreParams(), tmp_path / "masks", images, tmp_path / "score")
    select_metrics = select_stage.run(select_stage.SelectParams(target_size=10), tmp_path / "score",
                                      tmp_path / "select", tmp_path / "rejects")
    (tmp_path / "select.json").write_text(json.dumps(select_metrics))
    export_stage.run(export_stage.ExportParams(), tmp_path / "select", images, tmp_path / "export",
                     tmp_path / "select.json", tmp_path / "none.png")
    data = EditDataset(DataConfig(dataset=str(tmp_path / "export" / "dataset"), resolution=[32, 32], eval_size=0,
                                  center_crop=True, resample="lanczos"), seed=0)
    assert len(data.train_rows) == 4
    prompts = set()
    for row in data.train_rows:
        example = data.example(row)
        assert example.target is None and example.edit_mask.any() and not example.edit_mask.all()
        prompts.add(example.prompt)
    assert prompts == {f"replace the box with a red ball {k}" for k in range(4)}
    for row in data.table:  # the exported masks are the release's, inverted, at full resolution
        k = int(row["instruction"].rsplit(" ", 1)[1])
        np.testing.assert_array_equal(rle.decode(row["mask"]), edits[f"images_part1/{k:06d}.jpg"])
        assert row["mask_source"] == "shipped" and row["mask_method"] == "gt" and row["edited_image"] is None
