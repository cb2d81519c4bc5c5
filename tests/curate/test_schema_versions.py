"""Versioned formats: record shards, reviews files and exports carry a schema version; an older version is migrated
on read, a newer one is refused in one line naming the version and the supported ones."""
from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

from editkit import schema, schema_versions, store
from editkit.errors import UserError

MASK = {"size": [2, 2], "counts": "04"}


def _record(**values):
    base = dict(id="r1", origin="folder:x", origin_key="a.png", width=2, height=2, has_edited=True,
                instruction="make the box red")
    return schema.new_record(**{**base, **values})


def test_written_shards_carry_the_current_version_and_read_back_unchanged(tmp_path):
    record = _record(instruction_variants=["make the box red", "paint it red"], mask=MASK, mask_source="diff")
    store.write_records(tmp_path, "shard-00000", [record])
    metadata = pq.read_schema(tmp_path / "shard-00000.parquet").metadata
    assert schema_versions.parquet_version(metadata) == schema_versions.CURRENT["records"] == 2
    assert store.read_records(tmp_path, "shard-00000") == [record]


def test_a_version_1_shard_is_migrated(tmp_path):
    """A shard written before versions: no version in its metadata and (the oldest ones) no instruction_variants
    column; a mask that came with the data was only in ``mask`` (mask_source gt)."""
    old = [_record(mask=MASK, mask_source="gt"), _record(id="r2", mask=MASK, mask_source="diff")]
    table = schema.to_table(old).drop_columns(["instruction_variants"]).replace_schema_metadata(None)
    pq.write_table(table, tmp_path / "shard-00000.parquet")
    assert schema_versions.parquet_version(pq.read_schema(tmp_path / "shard-00000.parquet").metadata) == 1
    shipped, derived = store.read_records(tmp_path, "shard-00000")
    assert shipped["instruction_variants"] == derived["instruction_variants"] == ["make the box red"]
    assert shipped["gt_mask"] == MASK and shipped["mask"] == MASK  # the shipped mask under its one name
    assert derived["gt_mask"] is None  # a derived mask is not ground truth
    # rewritten by a stage, the shard is current and reads back as migrated
    store.write_records(tmp_path / "next", "shard-00000", [shipped, derived])
    assert store.read_records(tmp_path / "next", "shard-00000") == [shipped, derived]


def test_a_newer_record_version_is_refused_in_one_line(tmp_path):
    table = schema.to_table([_record()]).replace_schema_metadata({schema_versions.PARQUET_KEY: b"9"})
    pq.write_table(table, tmp_path / "shard-00000.parquet")
    with pytest.raises(UserError) as error:
        store.read_records(tmp_path, "shard-00000")
    message = str(error.value)
    assert "\n" not in message and "shard-00000.parquet" in message
    assert "records schema version 9 is not supported" in message and "reads versions 1, 2" in message
    assert "newer editkit" in message


def test_reviews_files_old_current_and_newer(tmp_path):
    from annotate.merge import load_reviews, reviews_document

    review = {"sample_id": "r1", "choice": "accept", "comment": "", "mask": None, "updated_at": "2026-01-01T00:00:00",
              "reviewer": "unknown", "created_at": None}  # as version 3 writes it (2 -> 3 adds the reviewer)
    old = tmp_path / "old.json"
    old.write_text(json.dumps([review]))  # version 1: a bare list
    current = tmp_path / "current.json"
    store.write_json(current, reviews_document([review]))
    stamped = json.loads(current.read_text())
    assert stamped["schema_version"] == schema_versions.CURRENT["reviews"] >= 2 and stamped["reviews"] == [review]
    assert set(load_reviews(old)) == set(load_reviews(current)) == {"r1"}
    migrated = schema_versions.migrate("reviews", [review])  # version 1, the bare list
    assert migrated["schema_version"] == stamped["schema_version"] and len(migrated["reviews"]) == 1
    newer = tmp_path / "newer.json"
    version = schema_versions.CURRENT["reviews"] + 1
    newer.write_text(json.dumps({"schema_version": version, "reviews": [review]}))
    readable = ", ".join(map(str, schema_versions.supported("reviews")))
    with pytest.raises(UserError, match=rf"newer\.json: reviews schema version {version} is not supported.*"
                                        rf"reads versions {readable}$"):
        load_reviews(newer)


def test_export_stamp(tmp_path):
    assert schema_versions.export_version(tmp_path) == 1  # unstamped: an older export or another tool's dataset
    schema_versions.write_export_stamp(tmp_path)
    assert schema_versions.export_version(tmp_path) == schema_versions.CURRENT["export"]
    (tmp_path / schema_versions.EXPORT_STAMP).write_text('{"schema_version": "x2"}')
    with pytest.raises(UserError, match=r"export schema version 'x2' is not supported; this editkit reads versions"):
        schema_versions.export_version(tmp_path)


def test_registry_rules():
    with pytest.raises(ValueError, match="already registered"):
        schema_versions.migration("records", 1)(lambda record: record)
    with pytest.raises(KeyError, match="unknown schema kind"):
        schema_versions.stamp("nope", {})
    current = schema_versions.CURRENT["export"]
    assert schema_versions.stamp("export", {"schema_version": 0, "a": 1}) == {"schema_version": current, "a": 1}
    with pytest.raises(UserError, match="version True"):
        schema_versions.check("records", True)


def test_a_version_1_export_row_is_migrated():
    """Version 1 exports carried the record's mask_source; version 2 says which mask a row carries (mask_method keeps
    the finer name)."""
    def migrate(**row):
        return schema_versions.migrate("export", row, 1)

    assert migrate(mask_source="human", review_status="fixed") == {
        "mask_source": "reviewed", "mask_method": "human", "review_status": "fixed"}
    assert migrate(mask_source="gt")["mask_source"] == "shipped"
    assert migrate(mask_source="diff", review_status="accept")["mask_source"] == "reviewed"
    assert migrate(mask_source="fused") == {"mask_source": "derived", "mask_method": "fused"}  # diff + grounded
    assert migrate(mask_source=None) == {"mask_source": "none", "mask_method": None}
    assert migrate(instruction="x") == {"instruction": "x"}  # another tool's dataset without the column


def test_the_trainer_reads_an_unstamped_export_migrated(tmp_path):
    import datasets
    import numpy as np
    from PIL import Image

    from editkit import rle
    from train.config import DataConfig
    from train.data import EditDataset

    mask = np.zeros((8, 8), dtype=bool)
    mask[2:5, 2:5] = True
    rows = [{"source_image": Image.fromarray(np.full((8, 8, 3), 90, np.uint8)), "instruction": "add a box",
             "mask": rle.encode(mask), "mask_source": "gt", "edit_type": "add"}]
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "old"))  # no stamp: version 1
    data = EditDataset(DataConfig(dataset=str(tmp_path / "old"), resolution=[8, 8], eval_size=0), seed=0)
    assert data.example(0).provenance["mask_source"] == "shipped"
    schema_versions.write_export_stamp(tmp_path / "old")
    (tmp_path / "old" / schema_versions.EXPORT_STAMP).write_text('{"schema_version": 99}')
    with pytest.raises(UserError, match="export schema version 99 is not supported"):
        EditDataset(DataConfig(dataset=str(tmp_path / "old"), resolution=[8, 8], eval_size=0), seed=0)
