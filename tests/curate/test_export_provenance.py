"""Nothing substituted, dropped or leaked between a public dataset and the training export.

Shipped masks (MagicBrush painted, UltraEdit region-based, CoCoEdit-40K) reach the exported rows unchanged with
``mask_source: shipped`` and their provenance; ``derive``/``fuse`` record what they did; a restricted licence stops
the export unless allowed; a benchmark image planted in the training data is dropped with its reason."""
from __future__ import annotations

import json

import numpy as np
import pytest

from curate.scoring.filters import FilterParams
from curate.sources.presets import PresetParams
from curate.stages import export as export_stage
from curate.stages import ingest as ingest_stage
from curate.stages import masks as masks_stage
from curate.stages import score as score_stage
from curate.stages import select as select_stage
from editkit import export_columns as columns
from editkit import rle, schema, store
from editkit.scores import stored
from tests.support import dataset_layouts as layouts

pytestmark = pytest.mark.filterwarnings("ignore:only .* records pass the filters")  # tiny sets, large target_size
NO_FILTERS = FilterParams(**{name: None for name in FilterParams.__dataclass_fields__})


def _ingest(name: str, root, out):
    params = ingest_stage.IngestParams(source="preset", preset=PresetParams(name=name, path=str(root)))
    ingest_stage.run_ingest(ingest_stage.open_source(params), out, params, progress=False)
    return out


def _pipeline(ingest_dir, work, policy: str = "keep", export_params=None):
    """masks -> score -> select (every pair kept) -> export; returns (records after masks, exported rows)."""
    from datasets import load_from_disk

    images = ingest_dir / "images"
    masks_stage.run(masks_stage.MasksParams(source_policy=policy), ingest_dir / "records", images, work / "masks")
    score_stage.run(score_stage.ScoreParams(), work / "masks", images, work / "score")
    select = select_stage.SelectParams(target_size=100, filters=NO_FILTERS,
                                       dedupe=select_stage.DedupeParams(enabled=False))
    select_stage.run(select, work / "score", work / "select", work / "rejects")
    params = export_params or export_stage.ExportParams(leak_check=export_stage.LeakCheckParams(enabled=False))
    metrics = export_stage.run(params, work / "select", images, work / "export", work / "none.json",
                               work / "none.png")
    records = {r["id"]: r for _, shard in store.iter_records(work / "masks") for r in shard}
    return records, list(load_from_disk(str(work / "export" / "dataset"))), metrics


@pytest.fixture(scope="module")
def shipped_sets(tmp_path_factory):
    """MagicBrush (painted masks), UltraEdit region-based and CoCoEdit-40K look-alikes, ingested once."""
    from tests.curate.test_cocoedit_40k import build_release

    root = tmp_path_factory.mktemp("shipped")
    build_release(root / "cocoedit_src", count=3)
    return {
        "magicbrush": _ingest("magicbrush", layouts.magicbrush(root / "mb_src", n=2), root / "mb"),
        "ultraedit": _ingest("ultraedit", layouts.ultraedit(root / "ue_src", n=2, region_based=True), root / "ue"),
        "cocoedit_40k": _ingest("cocoedit_40k", root / "cocoedit_src", root / "coco"),
    }


@pytest.mark.parametrize("name", ["magicbrush", "ultraedit", "cocoedit_40k"])
def test_shipped_masks_reach_the_export_unchanged(shipped_sets, tmp_path, name):
    records, rows, metrics = _pipeline(shipped_sets[name], tmp_path)
    ingested = {r["id"]: r for _, shard in store.iter_records(shipped_sets[name] / "records") for r in shard
                if schema.is_ok(r)}
    assert rows and len(rows) == len(ingested) and metrics["mask_source"] == {"shipped": len(rows)}
    for row in rows:
        record = ingested[row["id"]]
        shipped = rle.decode(record["gt_mask"])
        assert shipped.shape == (record["height"], record["width"]) and shipped.any()
        exported = rle.decode(row["mask"])
        assert rle.iou(exported, shipped) == 1.0 and np.array_equal(exported, shipped)
        assert np.array_equal(rle.decode(row["gt_mask"]), shipped)
        assert row["mask_source"] == "shipped" and row["mask_method"] == "gt"
        # provenance: dataset, source row key, instruction variants, flags, meta, licence
        meta = json.loads(record["meta"])
        assert row["dataset"] == (meta.get("dataset") or name) and row["origin"] == f"preset:{name}"
        assert row["split"] == meta.get("split")
        assert row["origin_key"] == record["origin_key"] and row["instruction"] == record["instruction"]
        assert row["instruction_variants"] == record["instruction_variants"]
        assert json.loads(row["meta"]) == meta
        assert row["licence"] == columns.licence_of(record)
        assert set(record["flags"]) <= set(row["flags"])
        if record["has_edited"]:  # a derived mask existed: its agreement with the shipped one is a score
            assert records[row["id"]]["scores"][masks_stage.SHIPPED_IOU_SCORE] == row["score_shipped_derived_iou"]
    card = (tmp_path / "export" / "README.md").read_text()
    assert "## Trace a row back" in card and "`origin_key`" in card and "## Licences" in card


@pytest.fixture(scope="module")
def narrowed_magicbrush(shipped_sets, tmp_path_factory):
    """The MagicBrush look-alike with each shipped mask cut to its left half (so it differs from the derived)."""
    import shutil

    out = tmp_path_factory.mktemp("narrowed") / "ingest"
    shutil.copytree(shipped_sets["magicbrush"] / "images", out / "images")
    for shard, records in store.iter_records(shipped_sets["magicbrush"] / "records"):
        for record in records:
            if record["gt_mask"] is not None:
                mask = rle.decode(record["gt_mask"])
                mask[:, mask.shape[1] // 2:] = False
                record["gt_mask"] = rle.encode(mask)
        store.write_records(out / "records", shard, records)
    return out


def test_derive_replaces_with_a_record(narrowed_magicbrush, tmp_path):
    records, rows, metrics = _pipeline(narrowed_magicbrush, tmp_path, policy="derive")
    assert rows and metrics["mask_source"] == {"derived": len(rows)}
    for row in rows:
        record = records[row["id"]]
        assert masks_stage.REPLACED_FLAG in record["flags"] and masks_stage.REPLACED_FLAG in row["flags"]
        assert row["mask_method"] == "diff" and row["mask"] == record["mask"]
        assert row["gt_mask"] == record["gt_mask"] and row["gt_mask"] != row["mask"]  # the shipped one kept beside
        assert 0 < row["score_shipped_derived_iou"] < 1
    summary = masks_stage.summarize(tmp_path / "masks")
    assert summary["counts"][masks_stage.REPLACED_FLAG] == len(rows) and summary["shipped_masks"]["count"] == len(rows)


def test_fuse_unites_shipped_and_derived(narrowed_magicbrush, tmp_path):
    records, rows, metrics = _pipeline(narrowed_magicbrush, tmp_path, policy="fuse")
    assert rows and metrics["mask_source"] == {"fused": len(rows)}
    for row in rows:
        shipped, fused = rle.decode(row["gt_mask"]), rle.decode(row["mask"])
        assert (fused >= shipped).all() and fused.sum() > shipped.sum() and row["mask_method"] == "gt_fused"


def test_reviewed_mask_wins_and_policy_is_checked():
    h, w = 6, 8
    shipped, derived, painted = (np.zeros((h, w), bool) for _ in range(3))
    shipped[:3], derived[:, :4], painted[2:, 2:] = True, True, True
    base = dict(origin="preset:x", width=w, height=h, has_edited=True, gt_mask=rle.encode(shipped))
    human = schema.new_record(id="h", mask=rle.encode(painted), mask_source="human", **base)
    derived_rec = schema.new_record(id="d", mask=rle.encode(derived), mask_source="diff", **base)
    sample = schema.new_record(id="s", mask=rle.encode(derived), mask_source="diff", **{**base, "origin": "sample"})
    out = masks_stage.apply_source_policy([human, derived_rec, sample], "keep")
    assert out[0]["mask_source"] == "human" and np.array_equal(rle.decode(out[0]["mask"]), painted)
    assert out[1]["mask_source"] == "gt" and out[1]["scores"]["shipped_derived_iou"] == stored(rle.iou(shipped, derived))
    assert out[2]["mask_source"] == "diff"  # the built-in sample's gt is evaluation truth, not a shipped mask
    assert columns.mask_provenance("human") == "reviewed" and columns.mask_provenance("gt", "accept") == "reviewed"
    assert columns.mask_provenance("fused") == "derived" and columns.mask_provenance(None) == "none"
    with pytest.raises(ValueError, match="source_policy must be one of keep, fuse, derive"):
        masks_stage.apply_source_policy([], "nope")


def test_shipped_iou_filter_is_off_by_default_and_filters_when_set():
    from curate.scoring import filters

    assert FilterParams().shipped_derived_iou_min is None
    spec = filters.FILTERS["shipped_derived_iou_min"]
    values = np.array([0.2, 0.8, np.nan])  # NaN: no shipped mask, passes
    assert filters.fails(spec, 0.5, values, np.ones(3, bool)).tolist() == [True, False, False]


def _records_dir(root, rows, hashed=()):
    """Write selected records + images: rows = [(id, meta dict, source uint8 image)]; the ids in ``hashed`` carry
    their pHashes as the score stage stores them (the others are hashed by the export)."""
    from curate.scoring.phash import pair_hashes

    records, images = [], []
    shard = store.shard_name(0)
    for rid, meta, source in rows:
        edited = source.copy()
        edited[:4, :4] = 255 - edited[:4, :4]
        mask = np.zeros(source.shape[:2], bool)
        mask[:4, :4] = True
        records.append(schema.new_record(id=rid, origin=meta.pop("origin", "preset:demo"), origin_key=f"row {rid}",
                                         image_shard=shard, has_edited=True, instruction="invert the corner",
                                         edit_type="recolor", mask=rle.encode(mask), mask_source="diff",
                                         meta=json.dumps(meta), width=source.shape[1], height=source.shape[0]))
        if rid in hashed:
            records[-1]["phash"] = pair_hashes(source, edited)
        images.append({"id": rid, "source": store.encode_png(source), "edited": store.encode_png(edited)})
    store.write_records(root / "select", shard, records)
    store.write_image_shard(root / "images", shard, images)


def _image(seed, size=48):
    from scipy.ndimage import gaussian_filter

    noise = np.random.default_rng(seed).random((size, size, 3)) * 255
    return np.clip(gaussian_filter(noise, (3, 3, 0)) * 3 - 255, 0, 255).astype(np.uint8)


def _export(root, params, out="export"):
    return export_stage.run(params, root / "select", root / "images", root / out, root / "none.json",
                            root / "none.png")


def test_restricted_licence_is_refused_unless_allowed(tmp_path):
    from editkit.errors import UserError

    _records_dir(tmp_path, [("a", {"licence": "CC BY-NC-ND 4.0", "origin": "preset:pico_banana"}, _image(1)),
                            ("b", {"license": "cc-by-4.0"}, _image(2)), ("c", {}, _image(3))])
    off = export_stage.LeakCheckParams(enabled=False)
    with pytest.raises(UserError) as refused:
        _export(tmp_path, export_stage.ExportParams(leak_check=off))
    message = str(refused.value)
    assert "\n" not in message and "'CC BY-NC-ND 4.0'" in message and "pico_banana" in message
    assert "non-commercial and no-derivatives" in message and "export.allow_licences" in message
    assert not (tmp_path / "export").exists()
    from typer.testing import CliRunner

    from curate.cli import app

    params = tmp_path / "params.yaml"
    params.write_text("export:\n  leak_check: {enabled: false}\n")
    result = CliRunner().invoke(app, ["export", "--params", str(params), "--input", str(tmp_path / "select"),
                                      "--images", str(tmp_path / "images"), "--out", str(tmp_path / "cli"),
                                      "--metrics", str(tmp_path / "m.json")])
    assert result.exit_code == 2 and "'CC BY-NC-ND 4.0'" in result.output, result.output
    metrics = _export(tmp_path, export_stage.ExportParams(leak_check=off, allow_licences=["cc_by_nc_nd_4.0"]))
    assert metrics["rows"] == 3 and metrics["licence_unknown_rows"] == 1
    from editkit import schema_versions

    assert schema_versions.export_version(tmp_path / "export" / "dataset") == schema_versions.CURRENT["export"]
    assert metrics["licence_flagged"] == {"CC BY-NC-ND 4.0": ["non-commercial", "no-derivatives"]}
    card = (tmp_path / "export" / "README.md").read_text()
    assert "| CC BY-NC-ND 4.0 | 1 | pico_banana (1) | **non-commercial, no-derivatives**" in card
    assert "| cc-by-4.0 | 1 | demo (1) | none known |" in card and "| unknown | 1 | demo (1) | **unknown" in card
    from datasets import load_from_disk

    rows = {r["id"]: r for r in load_from_disk(str(tmp_path / "export" / "dataset"))}
    assert rows["c"]["licence"] == "unknown" and "licence_unknown" in rows["c"]["flags"]
    assert {"licence_non_commercial", "licence_no_derivatives"} <= set(rows["a"]["flags"])
    assert columns.licence_restrictions("MIT") == [] and columns.licence_restrictions("unknown") == []


def test_planted_benchmark_image_is_dropped_with_its_reason(tmp_path):
    import pyarrow.parquet as pq
    from PIL import Image

    from benchmarks.items import write_benchmark

    bench_image, resized = _image(10), _image(11)
    smaller = np.asarray(Image.fromarray(resized).resize((40, 40), Image.Resampling.BICUBIC))
    items = []
    for key, image in (("gedit-007", bench_image), ("gedit-008", resized), ("gedit-009", _image(12))):
        items.append((schema.new_record(id=f"id-{key}", origin="gedit", origin_key=key, has_edited=False),
                      store.encode_png(image)))
    write_benchmark(tmp_path / "bench" / "gedit", items)
    _records_dir(tmp_path, [("planted", {}, bench_image), ("resized", {}, smaller), ("clean", {}, _image(13)),
                            ("clean2", {}, _image(14))], hashed={"planted", "clean"})
    params = export_stage.ExportParams(leak_check=export_stage.LeakCheckParams(
        benchmarks=[str(tmp_path / "bench"), str(tmp_path / "not-built")]))
    metrics = _export(tmp_path, params)
    leak = metrics["leak_check"]
    assert leak["benchmarks"] == {"gedit": 3} and leak["not_found"] == [str(tmp_path / "not-built")]
    assert metrics["rows"] == 2 and leak["dropped"] == 2 and leak["dropped_by_benchmark"] == {"gedit": 2}
    rejects = pq.read_table(tmp_path / "export" / "rejects.parquet").to_pylist()
    assert {r["id"]: r["stage"] for r in rejects} == {"planted": "export", "resized": "export"}
    reasons = {r["id"]: r["reason"] for r in rejects}
    assert reasons["planted"].startswith("benchmark leak: source image near-duplicate of gedit item gedit-007")
    assert "gedit-008" in reasons["resized"]
    from datasets import load_from_disk

    assert sorted(load_from_disk(str(tmp_path / "export" / "dataset"))["id"]) == ["clean", "clean2"]
    card = (tmp_path / "export" / "README.md").read_text()
    assert "gedit (3 items)" in card and "Rows dropped as near-duplicates of a benchmark item: 2 (gedit 2)" in card
    assert "Not built, so not checked:" in card


def test_summary_shows_replacements_drops_and_licences(tmp_path, capsys):
    from curate import summary

    metrics = tmp_path / "metrics"
    metrics.mkdir()
    (metrics / "masks.json").write_text(json.dumps({
        "mean_iou": None, "source_policy": "derive", "shipped_masks": {"count": 5, "mean_iou_vs_derived": 0.41},
        "counts": {"shipped_mask_replaced": 5, "mask_ambiguous": 1}}))
    (metrics / "export.json").write_text(json.dumps({
        "rows": 3, "dataset_path": "d", "card_path": "c", "dataset_mb": 1.0, "mask_source": {"derived": 3},
        "leak_check": {"enabled": True, "dropped": 2, "dropped_by_benchmark": {"gedit": 2}, "items_checked": 9,
                       "benchmarks": {"gedit": 9}, "not_found": ["data/bench/compbench"]},
        "licence_flagged": {"CC BY-NC 4.0": ["non-commercial"]}, "licence_unknown_rows": 4}))
    summary.print_summary(metrics, tmp_path / "none.yaml")
    text = capsys.readouterr().out
    for expected in ("shipped masks: 5 (masks.source_policy derive)", "replaced by derived masks: 5",
                     "ambiguous paint: 1", "benchmark leaks: dropped 2 (gedit 2)", "not built: data/bench/compbench",
                     "CC BY-NC 4.0 (non-commercial)", "licence unknown: 4 rows", "exported masks: derived 3"):
        assert expected in text, expected


def test_one_column_contract_for_export_and_trainer():
    import inspect

    from train import config as train_config
    from train.config import DataConfig

    data = DataConfig()
    assert data.source_column == columns.SOURCE_IMAGE and data.mask_column == columns.MASK
    assert tuple(data.instruction_columns) == columns.INSTRUCTION_COLUMNS
    assert (data.edit_type_column, data.target_column, data.phrases_column) == (
        columns.EDIT_TYPE, columns.EDITED_IMAGE, columns.TARGET_PHRASES)
    assert '"source_image"' not in inspect.getsource(train_config)  # the names live in editkit.export_columns only
    feats = export_stage.features([], mask_png=True)
    expected = set(columns.TEXT_COLUMNS + columns.LIST_COLUMNS + columns.RLE_COLUMNS + columns.IMAGE_COLUMNS)
    assert set(feats) == expected | {columns.MASK_IMAGE}


def test_leak_search_threshold_roles_and_missing_edited():
    from curate.scoring import leaks

    rng = np.random.default_rng(0)
    items = [int(v) for v in rng.integers(0, 2**63, 50, dtype=np.int64)]
    bench = leaks.BenchmarkHashes(names=["imgedit"] * 50, keys=[f"k{i}" for i in range(50)], hashes=items)
    sources = rng.integers(0, 2**63, 6, dtype=np.int64).astype(np.uint64)
    edited = rng.integers(0, 2**63, 6, dtype=np.int64).astype(np.uint64)
    sources[0] = items[3] ^ 0b1111  # 4 bits: a near-duplicate at max_hamming 4
    sources[1] = items[4] ^ 0b11111  # 5 bits: not
    edited[2] = items[5]  # the edited image is a benchmark item
    edited[3] = items[6]  # ... but the row has no edited image (its hash is meaningless)
    has_edited = np.array([True, True, True, False, True, True])
    found = leaks.find_leaks([f"r{i}" for i in range(6)], sources, edited, has_edited, bench, 4)
    assert sorted(found) == ["r0", "r2"]
    assert found["r0"] == "benchmark leak: source image near-duplicate of imgedit item k3 (pHash 4 bits <= 4)"
    assert found["r2"].startswith("benchmark leak: edited image near-duplicate of imgedit item k5 (pHash 0 bits")
    assert sorted(leaks.find_leaks([f"r{i}" for i in range(6)], sources, edited, has_edited, bench, 5)) == \
        ["r0", "r1", "r2"]


def test_a_non_commercial_preset_is_refused_end_to_end(tmp_path):
    """HQ-Edit's look-alike (its preset records CC-BY-NC-4.0) through the pipeline: refused, then allowed."""
    from editkit.errors import UserError

    ingest = _ingest("hq_edit", layouts.hq_edit(tmp_path / "src", n=2), tmp_path / "ingest")
    with pytest.raises(UserError, match=r"licence 'CC-BY-NC-4\.0' \(non-commercial\) of 2 row\(s\) from "
                                        r"UCSC-VLAA/HQ-Edit is not allowed"):
        _pipeline(ingest, tmp_path / "refused")
    allowed = export_stage.ExportParams(allow_licences=["cc-by-nc-4.0"],
                                        leak_check=export_stage.LeakCheckParams(enabled=False))
    _, rows, metrics = _pipeline(ingest, tmp_path / "allowed", export_params=allowed)
    assert len(rows) == 2 and all(r["licence"] == "CC-BY-NC-4.0" for r in rows)
    assert all("licence_non_commercial" in r["flags"] for r in rows)
    assert metrics["licence_flagged"] == {"CC-BY-NC-4.0": ["non-commercial"]}
