"""Export: the dataset loads with datasets.load_from_disk; images, masks and scores round-trip; the card counts."""
import json

import numpy as np
import pytest

from editkit import rle, schema, store
from curate.scoring import funnel
from curate.stages import export as export_stage
from tests.support.gt_masks import run_gt_masks


@pytest.fixture(scope="module")
def selected_run(tmp_path_factory):
    """Two shards of records (some rejected) with their images, a select metrics file and a funnel plot."""
    root = tmp_path_factory.mktemp("export")
    rng = np.random.default_rng(0)
    truth = {}
    for shard_index in range(2):
        shard = store.shard_name(shard_index)
        records, images = [], []
        for k in range(5):
            rid = f"s{shard_index}r{k}"
            h, w = 24 + 8 * k, 32
            source = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
            edited = source.copy()
            mask = np.zeros((h, w), bool)
            mask[2 : 10 + k, 3:20] = True
            edited[mask] = 255 - edited[mask]
            record = schema.new_record(id=rid, image_shard=shard, has_edited=True, instruction=f"invert patch {k}",
                                       instruction_refined=f"invert the patch {k}", edit_type=["add", "remove"][k % 2],
                                       scope="local", target_phrases=["patch"], mask=rle.encode(mask),
                                       mask_source="diff", scores={"bg_psnr": 30.0 + k, "mask_area": mask.mean()})
            if k == 4:
                schema.reject(record, "select", "select: balance")
            records.append(record)
            images.append({"id": rid, "source": store.encode_png(source), "edited": store.encode_png(edited)})
            truth[rid] = (source, edited, mask, record)
        store.write_records(root / "select", shard, records)
        store.write_image_shard(root / "images", shard, images)
    rows = [{"filter": "balance", "rejected": 2, "remaining": 8, "by_edit_type": {"add": 2}}]
    select_metrics = {"records_in": 10, "funnel": rows, "target_size": 8, "seed": 0, "skipped_filters": [],
                      "warning": None}
    (root / "select.json").write_text(json.dumps(select_metrics))
    funnel.plot_png(rows, ["add", "remove"], 10, root / "funnel.png")
    metrics = export_stage.run(export_stage.ExportParams(), root / "select", root / "images", root / "export",
                               root / "select.json", root / "funnel.png")
    return root, truth, metrics


def test_dataset_loads_and_round_trips(selected_run):
    from datasets import load_from_disk

    root, truth, metrics = selected_run
    dataset = load_from_disk(str(root / "export" / "dataset"))
    assert len(dataset) == metrics["rows"] == 8
    assert sorted(dataset["id"]) == sorted(rid for rid, t in truth.items() if t[3]["status"] == "ok")
    assert {"score_bg_psnr", "score_mask_area", "mask_image", "source_image", "edited_image"} <= set(dataset.column_names)
    for row in dataset:
        source, edited, mask, record = truth[row["id"]]
        np.testing.assert_array_equal(np.asarray(row["source_image"].convert("RGB")), source)
        np.testing.assert_array_equal(np.asarray(row["edited_image"].convert("RGB")), edited)
        np.testing.assert_array_equal(rle.decode(row["mask"]), mask)
        np.testing.assert_array_equal(np.asarray(row["mask_image"]) == 255, mask)
        assert row["score_bg_psnr"] == record["scores"]["bg_psnr"]
        assert row["instruction_refined"] == record["instruction_refined"] and row["target_phrases"] == ["patch"]


def test_card_and_metrics(selected_run):
    root, _, metrics = selected_run
    card = (root / "export" / "README.md").read_text()
    assert metrics["by_edit_type"] == {"add": 4, "remove": 4}
    assert "| add | 4 |" in card and "| **total** | **8** |" in card
    assert "| balance | 2 | 8 | add: 2 |" in card and "![selection funnel](funnel.png)" in card
    assert (root / "export" / "funnel.png").exists()
    assert not (root / "export" / ".build-cache").exists()


def test_unknown_format_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="not implemented"):
        export_stage.run(export_stage.ExportParams(format="webdataset"), tmp_path, tmp_path, tmp_path / "o",
                         tmp_path / "m.json", tmp_path / "f.png")


def test_sample_through_score_select_export_loses_nothing(sample_ingest_dir, tmp_path):
    """The built-in sample (real photos) with its ground-truth masks standing in for the masks stage."""
    from datasets import load_from_disk

    from curate.stages import score as score_stage
    from curate.stages import select as select_stage

    run_gt_masks(sample_ingest_dir, tmp_path / "masks")
    images = sample_ingest_dir / "images"
    score_metrics = score_stage.run(score_stage.ScoreParams(), tmp_path / "masks", images, tmp_path / "score")
    assert score_metrics["clip_enabled"] is False and "CLIP scores off" in score_metrics["note"]
    select_metrics = select_stage.run(select_stage.SelectParams(target_size=12), tmp_path / "score",
                                      tmp_path / "select", tmp_path / "rejects")
    (tmp_path / "select.json").write_text(json.dumps(select_metrics))
    export_metrics = export_stage.run(export_stage.ExportParams(mask_png=False), tmp_path / "select", images,
                                      tmp_path / "export", tmp_path / "select.json", tmp_path / "none.png")
    ingested = {r["id"] for _, shard in store.iter_records(sample_ingest_dir / "records") for r in shard}
    exported = set(load_from_disk(str(tmp_path / "export" / "dataset"))["id"])
    import pyarrow.parquet as pq

    rejected = set(pq.read_table(tmp_path / "rejects" / "rejects.parquet")["id"].to_pylist())
    assert exported.isdisjoint(rejected) and exported | rejected == ingested
    assert len(exported) == export_metrics["rows"] == select_metrics["selected"] == 12
    counts = export_metrics["by_edit_type"].values()
    assert max(counts) - min(counts) <= 1  # balanced over the sample's edit types


def test_summary_says_what_was_produced_and_what_was_off(tmp_path, capsys):
    from curate import summary

    metrics = tmp_path / "metrics"
    metrics.mkdir()
    (metrics / "ingest.json").write_text(json.dumps({"records": 200}))
    (metrics / "masks.json").write_text(json.dumps({"mean_iou": 0.934}))
    (metrics / "select.json").write_text(json.dumps({
        "records_in": 200, "selected": 180, "target_size": 40000, "selected_by_edit_type": {"add": 90, "style": 90},
        "rejected_by_reason": {"select: bg_psnr_min: bg_psnr < 20": 15, "corrupt image": 5},
        "warning": "only 180 records pass the filters (target_size 40000): all of them are selected"}))
    (metrics / "export.json").write_text(json.dumps({"rows": 180, "dataset_path": "data/export/dataset",
                                                      "card_path": "data/export/README.md", "dataset_mb": 9.5}))
    params = tmp_path / "params.yaml"
    params.write_text("score:\n  clip:\n    enabled: false\nrewrite:\n  client: {backend: none}\nmasks:\n  mode: diff\n")
    summary.print_summary(metrics, params)
    text = capsys.readouterr().out
    for expected in ("records in: 200", "rejected: 20", "select: bg_psnr_min: bg_psnr < 20 (15)", "selected: 180",
                     "add 90", "mean_iou 0.934", "data/export/dataset", "CLIP scores", "MLLM instruction rewrite",
                     "grounded masks", "MLLM quality scores", "only 180 records pass"):
        assert expected in text, expected
    params.write_text("score:\n  clip:\n    enabled: true\n  quality: {enabled: true, client: {backend: openai}}\n"
                      "rewrite:\n  client: {backend: openai}\nmasks:\n  mode: grounded\n")
    summary.print_summary(metrics, params)
    assert "off:" not in capsys.readouterr().out
