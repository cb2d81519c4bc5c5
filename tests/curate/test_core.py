"""Schema, canonical RLE and atomic store: the contracts every stage relies on."""
import numpy as np
import pytest

from editkit import rle, schema, store
from editkit.pipeline import run_stage
from tests.support.numerics import assert_close


def test_rle_roundtrip_random_odd_sizes():
    rng = np.random.default_rng(0)
    for h, w in [(1, 1), (7, 13), (31, 64), (128, 97)]:
        mask = rng.random((h, w)) > 0.6
        encoded = rle.encode(mask)
        assert isinstance(encoded["counts"], str) and encoded["size"] == [h, w]
        np.testing.assert_array_equal(rle.decode(encoded), mask)
        assert rle.area(encoded) == mask.sum()


def test_iou_edge_cases():
    empty = np.zeros((4, 4), bool)
    assert rle.iou(empty, empty) == 1.0
    a = empty.copy(); a[:2] = True
    b = empty.copy(); b[1:3] = True
    assert_close(rle.iou(a, b), 4 / 12, accumulations=1, why="IoU: one division of pixel counts")


def test_record_table_roundtrip():
    mask = rle.encode(np.eye(5, dtype=bool))
    rec = schema.new_record(id="abc", instruction="make it red", mask=mask, scores={"psnr": 31.5}, target_phrases=["cup"])
    rejected = schema.reject(schema.new_record(id="def"), "ingest", "corrupt image")
    back = schema.from_table(schema.to_table([rec, rejected]))
    assert back[0]["scores"] == {"psnr": 31.5} and back[0]["target_phrases"] == ["cup"]
    assert back[0]["mask"] == mask
    assert back[1]["status"] == "rejected" and back[1]["reject_reason"] == "corrupt image"
    with pytest.raises(KeyError):
        schema.new_record(not_a_field=1)


def test_content_id_is_stable_and_separates_parts():
    assert schema.content_id("ab", "c") == schema.content_id("ab", "c")
    assert schema.content_id("ab", "c") != schema.content_id("a", "bc")


def test_atomic_dir_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out"
    with pytest.raises(RuntimeError):
        with store.atomic_dir(target) as tmp:
            (tmp / "half.txt").write_text("x")
            raise RuntimeError("killed")
    assert not target.exists() and list(tmp_path.iterdir()) == []
    with store.atomic_dir(target) as tmp:
        (tmp / "done.txt").write_text("ok")
    assert (target / "done.txt").read_text() == "ok"


def test_run_stage_refuses_to_drop_records(tmp_path):
    records = [schema.new_record(id=str(i)) for i in range(3)]
    store.write_records(tmp_path / "in", "shard-00000", records)

    def keep_two(recs, images):
        return recs[:2]

    with pytest.raises(RuntimeError, match="dropped 1 record"):
        run_stage("t", tmp_path / "in", tmp_path / "out", keep_two, progress=False)
    assert not (tmp_path / "out").exists()

    def reject_odd(recs, images):
        return [schema.reject(r, "t", "odd") if int(r["id"]) % 2 else r for r in recs]

    stats = run_stage("t", tmp_path / "in", tmp_path / "out", reject_odd, progress=False)
    assert stats.rejected_here == {"odd": 1} and stats.records_out == 3


def test_image_store_roundtrip(tmp_path):
    img = (np.arange(4 * 5 * 3) % 255).astype(np.uint8).reshape(4, 5, 3)
    store.write_image_shard(tmp_path, "shard-00000", [{"id": "a", "source": store.encode_png(img), "edited": None}])
    images = store.ImageStore(tmp_path)
    rec = {"id": "a", "image_shard": "shard-00000"}
    np.testing.assert_array_equal(images.source(rec), img)
    assert images.edited(rec) is None
