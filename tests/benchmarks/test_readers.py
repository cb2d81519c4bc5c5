"""Readers of the public formats, mask proposals and the masked benchmark build, on generated fixtures."""
from types import SimpleNamespace

import numpy as np
import pytest

from benchmarks import build, gedit, imgedit, proposals
from tests.benchmarks import fixtures as bad_fixtures
from benchmarks.items import bench_info, iter_benchmark, load_records, meta
from editkit import rle, schema
from editkit.config import from_dict


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
    def fields(rows):
        return [(i.key, i.instruction, i.image_bytes) for i in rows]

    assert fields(again) == fields(items)


def test_gedit_reader_rejects_wrong_layout(tmp_path):
    with pytest.raises(FileNotFoundError, match="GEdit-Bench not found"):
        list(gedit.read_gedit(tmp_path / "nothing"))
    import datasets

    datasets.Dataset.from_dict({"a": [1]}).to_parquet(str(tmp_path / "x.parquet"))
    with pytest.raises(ValueError, match="is not GEdit-Bench"):
        list(gedit.read_gedit(tmp_path))


def test_imgedit_reader_and_alias(bench_sources):
    items = list(imgedit.read_imgedit(bench_sources["imgedit"]))
    assert [i.category for i in items] == ["remove", "adjust", "background", "extract"]  # the release says adjust
    assert [imgedit.edit_type(i.category) for i in items] == ["remove", "adjust", "background", "extract"]
    assert all(i.error is None for i in items)
    # the json file itself, and the Basic folder, are accepted as the path too
    edit_json = bench_sources["imgedit"] / "Benchmark" / "Basic" / "basic_edit.json"
    assert len(list(imgedit.read_imgedit(edit_json))) == len(list(imgedit.read_imgedit(edit_json.parent))) == 4
    assert set(imgedit.find_prompts(bench_sources["imgedit"])) == {"remove", "adjust", "background", "extract"}
    assert imgedit.edit_type("alter") == "adjust"  # older copies of basic_edit.json


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


class FakeMasker:
    """Stands in for curate.masks.grounded.GroundedMasker: a fixed mask for every phrase list, calls recorded."""

    def __init__(self, found):
        self.found, self.calls = found, []
        self.params = SimpleNamespace(min_iou=0.1, foreground_prompt="main subject", batch_size=8)

    def ground_batch(self, images, phrases):
        self.calls.append(list(phrases))
        return [SimpleNamespace(mask=self.found) for _ in images]


def test_masker_proposals_follow_mask_rules():
    image = np.zeros((20, 30, 3), np.uint8)
    found = np.zeros((20, 30), bool)
    found[5:10, 5:10] = True

    def record(edit_type, phrases=("cup",)):
        return schema.new_record(id=edit_type, edit_type=edit_type, target_phrases=list(phrases), height=20, width=30)

    records = [record("remove"), record("background"), record("add"), record("style"), record("recolor", ())]
    masker = FakeMasker(found)
    proposals.propose(records, [image] * len(records), masker)
    removed, background, added, style, no_phrase = records
    assert masker.calls == [[["cup"], ["cup"]]]  # one batch: only what the rules can ground in the source
    np.testing.assert_array_equal(rle.decode(removed["mask"]), found)
    np.testing.assert_array_equal(rle.decode(background["mask"]), ~found)
    assert removed["mask_source"] == background["mask_source"] == "grounded"
    assert proposals.NEEDS_REVIEW in removed["flags"]  # machine masks still await review
    assert added["mask"] is None and added["mask_source"] == "none"  # the object exists only after the edit
    assert style["mask_source"] == "whole" and proposals.NEEDS_REVIEW not in style["flags"]
    assert no_phrase["mask_source"] == "none" and proposals.NEEDS_REVIEW in no_phrase["flags"]
    nothing = [record("replace")]
    proposals.propose(nothing, [image], FakeMasker(np.zeros((20, 30), bool)))
    assert nothing[0]["mask_source"] == "none" and "grounding_empty" in nothing[0]["flags"]
    wrong = proposals.apply_known_mask(record("remove"), np.ones((5, 5), bool))
    assert wrong["status"] == "rejected" and "supplied mask" in wrong["reject_reason"]


@pytest.mark.parametrize("text,expected", [
    ("Change the background to a beach, keep the blue square.", ["blue square"]),
    ("Replace the background with a forest while preserving the dog in the center.", ["dog"]),
    ("Change the background to a beach.", []),
])
def test_kept_subject(text, expected):
    assert proposals.kept_subject(text) == expected


def test_grounding_phrases_per_rule():
    background = schema.new_record(edit_type="background", instruction="Change the background to snow.")
    assert proposals.grounding_phrases(background, "main subject") == ["main subject"]
    removal = schema.new_record(edit_type="remove", instruction="Remove the red car from the street.")
    assert proposals.grounding_phrases(removal) == ["red car"]


def test_build_with_tiny_grounding_models(bench_sources, tiny_sam2_dir, tmp_path):
    """bench.grounding loads the real masker (tiny random Grounding-DINO + SAM2): proposals follow the rules."""
    from tests.support.tiny.grounding_dino import build_tiny_grounding_dino

    grounding = {"detector": str(build_tiny_grounding_dino(tmp_path / "gd")),
                 "segmenter": str(tiny_sam2_dir), "device": "cpu", "progress": False,
                 "box_threshold": 0.0, "text_threshold": 0.0}
    stats = build.build("gedit", bench_sources["gedit"], tmp_path / "g", from_dict(build.BenchParams, {"grounding": grounding}),
                        progress=False)
    by_type = {r["edit_type"]: r for r in load_records(tmp_path / "g")}
    assert by_type["style"]["mask_source"] == "whole"
    for local in ("remove", "recolor", "background"):
        record = by_type[local]
        assert record["mask_source"] in ("grounded", "none") and proposals.NEEDS_REVIEW in record["flags"]
        if record["mask"] is not None:
            assert rle.decode(record["mask"]).shape == (record["height"], record["width"])
    assert by_type["background"]["target_phrases"] == ["green square"]  # the subject to keep, then complemented
    # thresholds 0: the random detector always returns boxes, so every local item takes the grounded path
    assert stats["mask_source"] == {"grounded": 3, "whole": 1} and stats["needs_review"] == 3


@pytest.mark.parametrize("value,expected", [(["en"], ("en",)), (["cn"], ("cn",)), (["both"], ("en", "cn")),
                                            (["all"], ("en", "cn")), (["en", "cn"], ("en", "cn")), ("both", ("en", "cn"))])
def test_gedit_languages(value, expected):
    assert gedit.check_languages(value) == expected


def test_gedit_languages_both_reads_both_and_unknown_is_an_error(bench_sources, tmp_path):
    assert len(list(gedit.read_gedit(bench_sources["gedit"], ["both"]))) == 8
    assert {i.extra["instruction_language"] for i in gedit.read_gedit(bench_sources["gedit"], ["cn"])} == {"cn"}
    with pytest.raises(ValueError, match=r"bench.gedit_languages: unknown language 'zh' .*choose from: en, cn, both"):
        list(gedit.read_gedit(bench_sources["gedit"], ["zh"]))
    with pytest.raises(ValueError, match="bench.gedit_languages"):  # before anything is read or loaded
        build.build("gedit", bench_sources["gedit"], tmp_path / "g", build.BenchParams(gedit_languages=["english"]),
                    progress=False)


def test_gedit_arrow_folder_and_source_image(bench_sources, tmp_path):
    import datasets

    arrow = bad_fixtures.as_arrow_folder(bench_sources["gedit"])
    assert {p.suffix for p in arrow.iterdir()} == {".arrow"}
    items = list(gedit.read_gedit(arrow, ["en"]))
    assert [i.key for i in items] == [i.key for i in gedit.read_gedit(bench_sources["gedit"], ["en"])]
    # a release whose two images differ: the default source is input_image (GEdit's scorer), raw on request
    table = gedit.load_rows(bench_sources["gedit"])
    first = table[0]
    small = {"bytes": _png(np.full((16, 16, 3), 7, np.uint8)), "path": None}
    rows = [dict(first, input_image=small)]
    out = tmp_path / "two" / "data" / "train-00000-of-00001.parquet"
    out.parent.mkdir(parents=True)
    datasets.Dataset.from_list(rows, features=table.features).to_parquet(str(out))
    (item,) = gedit.read_gedit(out.parent.parent, ["en"])
    assert item.image_bytes == small["bytes"]
    (raw,) = gedit.read_gedit(out.parent.parent, ["en"], source_image="input_image_raw")
    assert raw.image_bytes == first["input_image_raw"]["bytes"]


def _png(array):
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def test_imgedit_unpacked_benchmark_tar(bench_sources, tmp_path):
    tar = bad_fixtures.as_benchmark_tar(bench_sources["imgedit"])
    items = list(imgedit.read_imgedit(tar))
    assert len(items) == 4 and all(i.error is None for i in items)
    assert [i.key for i in items] == [i.key for i in imgedit.read_imgedit(bench_sources["imgedit"])]
    assert imgedit.find_prompts(tar) is None  # the tar ships no rubric...
    rubric = bench_sources["imgedit"] / "Benchmark" / "Basic" / "prompts.json"
    assert set(imgedit.find_prompts(tar, rubric)) == {"remove", "adjust", "background", "extract"}  # ...so point at it
    stats = build.build("imgedit", tar, tmp_path / "b", build.BenchParams(imgedit_prompts=str(rubric)), progress=False)
    assert stats["judge_prompts"] == "found" and stats["items"] == 4
    stats = build.build("imgedit", tar, tmp_path / "c", progress=False)
    assert stats["judge_prompts"].startswith("not found")
    with pytest.raises(FileNotFoundError, match="bench.imgedit_prompts"):
        imgedit.find_prompts(tar, tmp_path / "nope.json")


def test_imgedit_singleturn_json_without_types_takes_them_from_basic_edit(bench_sources):
    import json

    tar = bad_fixtures.as_benchmark_tar(bench_sources["imgedit"])
    path = tar / "singleturn" / "singleturn.json"
    entries = {k: {"id": v["id"], "prompt": v["prompt"]} for k, v in json.loads(path.read_text()).items()}
    path.write_text(json.dumps(entries))
    bare = list(imgedit.read_imgedit(tar))
    assert all(i.category == "" and imgedit.MISSING_TYPE_FLAG in i.flags for i in bare)
    basic = tar / "Basic"
    basic.mkdir()
    (basic / "basic_edit.json").write_text((bench_sources["imgedit"] / "Benchmark/Basic/basic_edit.json").read_text())
    joined = list(imgedit.read_imgedit(tar))
    assert [i.category for i in joined] == ["remove", "adjust", "background", "extract"] and not joined[0].flags


def test_imgedit_uge_items_have_no_type_and_are_kept(bench_sources, tmp_path):
    import shutil

    root = bench_sources["imgedit"].parent / "with_uge"
    shutil.copytree(bench_sources["imgedit"], root)
    bad_fixtures.add_uge(root)
    stats = build.build("imgedit", root, tmp_path / "uge", build.BenchParams(imgedit_suite="uge"), progress=False)
    records = load_records(tmp_path / "uge")
    assert stats["items"] == len(records) == 2 and all(schema.is_ok(r) for r in records)
    for record in records:
        assert record["edit_type"] is None and imgedit.MISSING_TYPE_FLAG in record["flags"]
        assert record["mask_source"] == "none" and proposals.NEEDS_REVIEW in record["flags"]
        assert meta(record)["category"] == "uge"
    with pytest.raises(ValueError, match="bench.imgedit_suite: unknown suite 'multi'"):
        list(imgedit.read_imgedit(root, suite="multi"))


def test_imgedit_image_ids_stay_inside_the_image_root(bench_sources):
    import json
    import shutil

    root = bench_sources["imgedit"].parent / "escape"
    shutil.copytree(bench_sources["imgedit"], root)
    path = root / "Benchmark" / "Basic" / "basic_edit.json"
    entries = json.loads(path.read_text())
    entries["999"] = {"id": "../../../../../etc/hostname", "prompt": "x", "edit_type": "remove"}
    path.write_text(json.dumps(entries))
    bad = [i for i in imgedit.read_imgedit(root) if i.key == "999"][0]
    assert "unsafe image path" in bad.error and "outside" in bad.error


def test_configured_masks_dir_that_does_not_exist_is_an_error(bench_sources, tmp_path):
    params = build.BenchParams(masks_dir={"gedit": str(tmp_path / "missing")})
    with pytest.raises(FileNotFoundError, match=r"bench.masks_dir.gedit: .*missing does not exist"):
        build.build("gedit", bench_sources["gedit"], tmp_path / "g", params, progress=False)
