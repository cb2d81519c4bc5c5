"""Export: the dataset loads with datasets.load_from_disk; images, masks and scores round-trip; the card counts."""
import json

import numpy as np
import pytest

from curate import rle, schema, store
from curate.scoring import funnel
from curate.stages import export as export_stage


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
