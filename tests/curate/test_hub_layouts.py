"""Datasets as the hub lays them out, read without copies, with their shipped masks kept exactly.

* files and splits are resolved the way ``datasets`` resolves them (hashed shard names, single files, README configs);
* the ``hf`` source streams (no data files appear in the datasets cache) and turns list-valued instruction columns into
  instruction variants;
* shipped masks are read by where the paint is and reach the records at the record's resolution (IoU 1.0), with
  ``mask_ambiguous`` / ``mask_resized`` flags or a size-mismatch rejection;
* every preset record carries its dataset, split and licence.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

from curate.sources.hf import HFParams, HFSource
from curate.sources.presets import PresetParams, masks, open_preset, tables
from curate.stages.ingest import IngestParams, run_ingest
from editkit import rle, schema, store
from tests.support import dataset_layouts as layouts


def ingest(source, target, **policy):
    run_ingest(source, target, IngestParams(source="preset", **policy), progress=False)
    return {r["origin_key"]: r for _, shard in store.iter_records(target / "records") for r in shard}


def iou(a, b) -> float:
    return float((a & b).sum() / max(1, (a | b).sum()))


@pytest.fixture(scope="module")
def magicbrush(tmp_path_factory):
    return layouts.magicbrush(tmp_path_factory.mktemp("mb") / "MagicBrush")


MB_COLUMNS = dict(source_column="source_img", edited_column="target_img", instruction_column="instruction",
                  mask_column="mask_img")


# ---------------------------------------------------------------- files as the hub lays them out
def test_hashed_shards_resolve_to_the_hub_splits(magicbrush):
    splits = tables.hub_splits(magicbrush)
    assert sorted(splits) == ["dev", "train"]
    assert [p.name for p in splits["train"]] == [layouts.hub_shard("train", k, 2) for k in range(2)]


def test_a_readme_config_decides_the_splits(tmp_path):
    root = layouts.instructpix2pix(tmp_path / "ip2p")
    (root / "README.md").write_text("---\nconfigs:\n- config_name: default\n  data_files:\n  - split: train\n"
                                    f"    path: data/{layouts.hub_shard('train', 0, 2)}\n  - split: extra\n"
                                    f"    path: data/{layouts.hub_shard('train', 1, 2)}\n---\n# card\n")
    assert sorted(tables.hub_splits(root)) == ["extra", "train"]
    assert len(open_preset(PresetParams(name="instructpix2pix", path=str(root)))) == 1


@pytest.mark.parametrize("name", ["magicbrush", "instructpix2pix"])
def test_hub_file_names_ingest_with_params_only(tmp_path, name):
    root = layouts.BUILDERS[name](tmp_path / name)
    source = open_preset(PresetParams(name=name, path=str(root)))
    records = ingest(source, tmp_path / "out")
    assert len(records) == 3 and all(schema.is_ok(r) for r in records.values())
    assert {json.loads(r["meta"])["split"] for r in records.values()} == {"train"}


def test_hf_source_reads_hub_shards_of_a_split(magicbrush):
    train = HFSource(HFParams(path=str(magicbrush), **MB_COLUMNS))
    dev = HFSource(HFParams(path=str(magicbrush), split="dev", **MB_COLUMNS))
    assert len(train) == 3 and len(dev) == 3
    assert [p.instruction for p in dev] == [f"make the box red {i}" for i in range(3)]
    with pytest.raises(ValueError, match=r"ingest.hf.split: 'test' not found .*choose one of: dev, train"):
        HFSource(HFParams(path=str(magicbrush), split="test", **MB_COLUMNS))


def test_hf_single_files_and_list_instructions(tmp_path):
    import gzip

    png = layouts.png(layouts.photo(1))
    rows = [{"src": png, "out": layouts.png(layouts.edited(layouts.photo(1))),
             "prompts": ["", "make the box red", "turn the box red", "make the box red"]},
            {"src": png, "out": png, "prompts": "one instruction"}]
    params = dict(source_column="src", edited_column="out", instruction_column="prompts")
    layouts._parquet(tmp_path / "one.parquet", {k: [r[k] for r in rows[:1]] for k in rows[0]}, ("src", "out"),
                     ("prompts",))
    (first,) = HFSource(HFParams(path=str(tmp_path / "one.parquet"), **params))
    assert first.instruction == "make the box red"
    assert first.instruction_variants == ["make the box red", "turn the box red"]
    lines = [{**r, "src": {"bytes": None, "path": "a.png"}, "out": {"bytes": None, "path": "a.png"}} for r in rows]
    (tmp_path / "a.png").write_bytes(png)
    (tmp_path / "rows.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    with gzip.open(tmp_path / "rows.jsonl.gz", "wt") as handle:
        handle.write((tmp_path / "rows.jsonl").read_text())
    for name in ("rows.jsonl", "rows.jsonl.gz"):
        pairs = list(HFSource(HFParams(path=str(tmp_path / name), **params)))
        assert [p.instruction for p in pairs] == ["make the box red", "one instruction"]
        assert pairs[1].instruction_variants == ["one instruction"] and pairs[0].source == png


def test_hf_streams_without_a_cache_copy(magicbrush, tmp_path, monkeypatch):
    import datasets

    cache = tmp_path / "hf-cache"
    monkeypatch.setenv("HF_DATASETS_CACHE", str(cache))
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", cache)
    source = HFSource(HFParams(path=str(magicbrush), **MB_COLUMNS))
    assert source.dataset is None and source.table.files  # read in place, file by file
    assert source.table.read_columns == ["source_img", "target_img", "instruction", "mask_img"]
    assert len(list(source)) == 3
    copies = [p for p in cache.rglob("*") if p.is_file()] if cache.exists() else []
    assert copies == []


# ---------------------------------------------------------------- shipped masks, read where the paint is
@pytest.mark.parametrize("reader", ["preset", "hf"])
def test_magicbrush_alpha_masks_reach_the_records_exactly(magicbrush, tmp_path, reader):
    source = (open_preset(PresetParams(name="magicbrush", path=str(magicbrush))) if reader == "preset"
              else HFSource(HFParams(path=str(magicbrush), **MB_COLUMNS)))
    records = ingest(source, tmp_path / "out")
    assert len(records) == 3
    for record in records.values():  # white photo pixels and white under the erased region change nothing
        assert iou(rle.decode(record["gt_mask"]), layouts.region()) == 1.0
        assert "mask_ambiguous" not in record["flags"]


def test_magicbrush_at_a_smaller_record_resolution(magicbrush, tmp_path):
    records = ingest(open_preset(PresetParams(name="magicbrush", path=str(magicbrush))), tmp_path / "out",
                     max_side=16)
    for record in records.values():
        assert "downscaled" in record["flags"] and rle.decode(record["gt_mask"]).shape == (16, 16)
        np.testing.assert_array_equal(rle.decode(record["gt_mask"]), layouts.region()[::2, ::2])


def test_white_paint_over_white_photo_pixels_is_flagged_not_shrunk(tmp_path):
    root = layouts.magicbrush(tmp_path / "rgb", mask_style="rgb")
    records = ingest(open_preset(PresetParams(name="magicbrush", path=str(root))), tmp_path / "out")
    for record in records.values():
        assert "mask_ambiguous" in record["flags"]
        assert json.loads(record["meta"])["mask_ambiguous_pixels"] == 2 * 16
        assert iou(rle.decode(record["gt_mask"]), layouts.region()) == 1.0  # the white spot under the paint kept


def test_mask_readings_and_sizes():
    image = layouts.white_spots(layouts.photo(7))
    source = layouts.png(image)
    region = layouts.region()
    alpha = masks.read_mask(layouts.magicbrush_mask(image), source)
    assert alpha.how == "alpha" and (alpha.mask == region).all() and alpha.flags == []
    binary = masks.read_mask(layouts.png(np.where(region, 255, 0).astype(np.uint8)), source)
    assert binary.how == "binary" and (binary.mask == region).all()
    half = masks.read_mask(layouts.png(np.where(region, 255, 0).astype(np.uint8)[::2, ::2]), source)
    assert half.flags == [masks.RESIZED_FLAG] and (half.mask == region).all()
    with pytest.raises(masks.MaskProblem, match=r"mask size mismatch: mask 32x16, image 32x32"):
        masks.read_mask(layouts.png(np.zeros((16, 32), np.uint8)), source)
    with pytest.raises(masks.MaskProblem, match="corrupt mask"):
        masks.read_mask(b"not a png", source)


def test_ultraedit_region_masks_exact_resized_or_rejected(tmp_path):
    root = layouts.ultraedit(tmp_path / "region", region_based=True)
    records = ingest(open_preset(PresetParams(name="ultraedit", path=str(root))), tmp_path / "out")
    assert len(records) == 3 and all(iou(rle.decode(r["gt_mask"]), layouts.region()) == 1.0
                                     for r in records.values())
    meta = json.loads(records["1000"]["meta"])
    assert (meta["dataset"], meta["split"], meta["licence"], meta["licence_restrictions"]) == (
        "BleachNick/UltraEdit_500k", "RegionBase", "CC-BY-4.0", [])


def test_cocoedit_40k_masks_read_back_exactly(tmp_path):
    root = layouts.cocoedit_40k(tmp_path / "release")
    records = ingest(open_preset(PresetParams(name="cocoedit_40k", path=str(root))), tmp_path / "out")
    assert len(records) == 3
    for key, record in records.items():
        assert record["mask_source"] == "gt" and iou(rle.decode(record["gt_mask"]), layouts.region()) == 1.0
        assert ("mask_resized" in record["flags"]) == key.endswith("000002.jpg")


# ---------------------------------------------------------------- Inter-Edit-Train
def test_inter_edit_reads_its_release(tmp_path):
    root = layouts.inter_edit(tmp_path / "Inter-Edit-Train")
    records = ingest(open_preset(PresetParams(name="inter_edit", path=str(root))), tmp_path / "out")
    assert sorted(records) == ["train-00000-of-00002/0", "train-00000-of-00002/1", "train-00001-of-00002/0",
                               "train-00001-of-00002/1"]
    assert all(schema.is_ok(r) for r in records.values())
    for key, record in records.items():
        assert iou(rle.decode(record["gt_mask"]), layouts.region()) == 1.0
        meta = json.loads(record["meta"])
        assert meta["box_xyxy"] == [10.0, 8.0, 24.0, 20.0] and meta["licence"] == "unknown"
        assert meta["dataset"] == "a1557811266/Inter-Edit-Train"
    assert "mask_resized" in records["train-00000-of-00002/1"]["flags"]
    types = {json.loads(r["meta"])["dataset_edit_type"]: r["edit_type"] for r in records.values()}
    assert types == {"Add": "add", "Remove": "remove", "Texture": "material", "Local": None}
    one = open_preset(PresetParams(name="inter_edit", path=str(root / "metadata" / "train-00001-of-00002.jsonl.gz")))
    assert [p.edited is not None for p in one] == [True, True]


def test_inter_edit_member_outside_the_shard_is_a_reason(tmp_path):
    import gzip

    root = layouts.inter_edit(tmp_path / "release")
    line = {"instruction": "x", "source": "../../etc/passwd", "target": "00000000_tgt.png"}
    with gzip.open(root / "metadata" / "train-00000-of-00002.jsonl.gz", "wt") as handle:
        handle.write(json.dumps(line) + "\n")
    (pair, *_) = open_preset(PresetParams(name="inter_edit", path=str(root)))
    assert pair.source is None and pair.error.startswith("missing source image: ../../etc/passwd not in asset-00000")


# ---------------------------------------------------------------- licences
def test_every_preset_record_names_its_licence(tmp_path):
    expected = {"hq_edit": ("CC-BY-NC-4.0", ["non-commercial"]), "magicbrush": ("CC-BY-4.0", []),
                "pico_banana": ("CC-BY-NC-ND-4.0", ["non-commercial", "no-derivatives"]),
                "instructpix2pix": ("unknown", [])}
    for name, (licence, restrictions) in expected.items():
        root = layouts.BUILDERS[name](tmp_path / name)
        pair = next(iter(open_preset(PresetParams(name=name, path=str(root), limit=1))))
        assert (pair.meta["licence"], pair.meta["licence_restrictions"]) == (licence, restrictions), name
    source = HFSource(HFParams(path=str(layouts.hq_edit(tmp_path / "hf")), source_column="input_image",
                               edited_column="output_image", instruction_column="edit", licence="CC-BY-NC-4.0"))
    assert next(iter(source)).meta["licence_restrictions"] == ["non-commercial"]


def test_hf_hub_id_is_streamed(magicbrush, monkeypatch):
    """A hub id goes through datasets' IterableDataset (here over the local shards standing in for the hub)."""
    import datasets

    calls = []
    rows = [row for path in tables.hub_splits(magicbrush)["train"] for row in tables.iter_file(path)]
    features = datasets.Features({k: datasets.Image() if k.endswith("_img") else datasets.Value("string")
                                  for k in rows[0] if k != "turn_index"} | {"turn_index": datasets.Value("int32")})

    def fake_load_dataset(path, split=None, streaming=False):
        calls.append((path, split, streaming))
        return datasets.Dataset.from_list(rows, features=features).to_iterable_dataset()

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    source = HFSource(HFParams(path="osunlp/MagicBrush", limit=2, **MB_COLUMNS))
    assert isinstance(source.dataset, datasets.IterableDataset)
    pairs = list(source)
    assert calls == [("osunlp/MagicBrush", "train", True)] and len(pairs) == 2
    assert all(p.error is None and (p.gt_mask == layouts.region()).all() for p in pairs)
