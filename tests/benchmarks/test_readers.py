"""Readers of the public formats, mask proposals and the masked benchmark build, on generated fixtures."""
import json

import numpy as np
import pytest

from benchmarks import build, gedit, imgedit, proposals
from benchmarks.items import bench_info, iter_benchmark, load_records, meta
from benchmarks.phrases import target_phrases
from curate import rle, schema


def test_gedit_reader_parquet_and_save_to_disk(bench_sources, tmp_path):
    import datasets

    items = list(gedit.read_gedit(bench_sources["gedit"], ("en",)))
    assert len(items) == 4 and {i.extra["instruction_language"] for i in items} == {"en"}
    assert [i.extra["intersection_exist"] for i in items] == [True, False, True, False]
    assert all(i.image_bytes and i.error is None for i in items)
    assert len(list(gedit.read_gedit(bench_sources["gedit"], ()))) == 8  # both languages
    # the same rows written by save_to_disk (a DatasetDict, as load_dataset returns it) read the same
    table = datasets.load_dataset("parquet", data_files=str(bench_sources["gedit"] / "data" / "*.parquet"))
    table.save_to_disk(str(tmp_path / "disk"))
    again = list(gedit.read_gedit(tmp_path / "disk", ("en",)))
    assert [(i.key, i.instruction, i.image_bytes) for i in again] == [(i.key, i.instruction, i.image_bytes) for i in items]


def test_gedit_reader_rejects_wrong_layout(tmp_path):
    with pytest.raises(FileNotFoundError, match="GEdit-Bench not found"):
        list(gedit.read_gedit(tmp_path / "nothing"))
    import datasets

    datasets.Dataset.from_dict({"a": [1]}).to_parquet(str(tmp_path / "x.parquet"))
    with pytest.raises(ValueError, match="is not GEdit-Bench"):
        list(gedit.read_gedit(tmp_path))


def test_imgedit_reader_and_alias(bench_sources):
    items = list(imgedit.read_imgedit(bench_sources["imgedit"]))
    assert [i.category for i in items] == ["remove", "alter", "background", "extract"]
    assert [imgedit.edit_type(i.category) for i in items] == ["remove", "adjust", "background", "extract"]
    assert all(i.error is None for i in items)
    # the json file itself, and the Basic folder, are accepted as the path too
    edit_json = bench_sources["imgedit"] / "Benchmark" / "Basic" / "basic_edit.json"
    assert len(list(imgedit.read_imgedit(edit_json))) == len(list(imgedit.read_imgedit(edit_json.parent))) == 4
    assert set(imgedit.find_prompts(bench_sources["imgedit"])) == {"remove", "alter", "background", "extract"}


@pytest.mark.parametrize("bench", ["gedit", "imgedit"])
def test_bad_items_become_rejected_records(bench, broken_sources, tmp_path):
    stats = build.build(bench, broken_sources[bench], tmp_path / bench, progress=False)
    records = load_records(tmp_path / bench)
    rejected = {r["origin_key"]: r["reject_reason"] for r in records if not schema.is_ok(r)}
    assert stats["items"] == len(records) == 7  # 4 good + 3 bad: nothing dropped
    reasons = " | ".join(rejected.values())
    if bench == "gedit":
        assert set(rejected) == {"corrupt", "unknown", "empty"}
        assert "corrupt source image" in rejected["corrupt"] and "teleport" in rejected["unknown"]
        assert "missing source image" in rejected["empty"]
    else:
        assert set(rejected) == {"900", "901", "902"}
        assert "missing source image" in rejected["900"] and "malformed entry" in rejected["901"]
        assert "unknown imgedit category 'teleport'" in rejected["902"], reasons


def test_build_without_masks_proposes_by_rule(bench_sources, tmp_path):
    stats = build.build("gedit", bench_sources["gedit"], tmp_path / "g", progress=False)
    by_type = {r["edit_type"]: r for r in load_records(tmp_path / "g")}
    style = by_type["style"]
    assert style["mask_source"] == "whole" and rle.decode(style["mask"]).all() and style["scope"] == "global"
    for local in ("remove", "recolor", "background"):
        assert by_type[local]["mask"] is None and by_type[local]["mask_source"] == "none"
        assert proposals.NEEDS_REVIEW in by_type[local]["flags"]
    assert by_type["remove"]["target_phrases"] == ["red square"]
    assert stats["needs_review"] == 3 and stats["mask_source"] == {"none": 3, "whole": 1}
    assert bench_info(tmp_path / "g")["bench"] == "gedit"


def test_built_benchmark_records_and_images(built, bench_sources):
    for bench, directory in built.items():
        for _, records, images in iter_benchmark(directory):
            for record in records:
                assert record["origin"] == bench and record["has_edited"] is False and schema.is_ok(record)
                source = images.source(record["id"])
                assert source.shape == (record["height"], record["width"], 3)
                assert images.edited_bytes(record["id"]) is None
                assert record["mask_source"] == "gt" and record["gt_mask"] == record["mask"]
        # polarity: the supplied PNG is white where the image should change; so is our mask
        from PIL import Image

        record = load_records(directory)[0]
        png = np.asarray(Image.open(bench_sources[bench] / "reference_masks" / f"{record['origin_key']}.png")) > 127
        np.testing.assert_array_equal(rle.decode(record["mask"]), png)
    info = bench_info(built["imgedit"])
    assert "<edit_prompt>" in info["judge_prompts"]["remove"]
    assert meta(load_records(built["gedit"])[0])["task_type"] == "subject-remove"


def test_grounder_proposals_follow_mask_rules():
    image = np.zeros((20, 30, 3), np.uint8)
    found = np.zeros((20, 30), bool)
    found[5:10, 5:10] = True
    calls = []

    def grounder(img, phrases):
        calls.append(phrases)
        return found

    def record(edit_type):
        return schema.new_record(id=edit_type, edit_type=edit_type, target_phrases=["cup"], height=20, width=30)

    removed = proposals.propose(record("remove"), image, grounder)
    np.testing.assert_array_equal(rle.decode(removed["mask"]), found)
    background = proposals.propose(record("background"), image, grounder)
    np.testing.assert_array_equal(rle.decode(background["mask"]), ~found)
    added = proposals.propose(record("add"), image, grounder)  # target exists only after the edit
    assert added["mask"] is None and added["mask_source"] == "none"
    assert calls == [["cup"], ["cup"]]
    assert proposals.NEEDS_REVIEW in removed["flags"]  # machine masks still await review
    nothing = proposals.propose(record("replace"), image, lambda img, p: None)
    assert nothing["mask_source"] == "none" and "grounding_found_nothing" in nothing["flags"]
    wrong = proposals.apply_known_mask(record("remove"), np.ones((5, 5), bool))
    assert wrong["status"] == "rejected" and "supplied mask" in wrong["reject_reason"]


@pytest.mark.parametrize("text,expected", [
    ("Remove the red car from the street.", ["red car"]),
    ("Replace the deer in the image with a lion.", ["deer"]),
    ("Change the color of the old bicycle to blue.", ["old bicycle"]),
    ("Change the background to a beach, keep the blue square.", ["blue square"]),
    ("Transfer the image into a watercolor style.", []),
    ("", []),
])
def test_target_phrases(text, expected):
    assert target_phrases(text) == expected
