"""`editkit view`: the gallery's chunked data files and its thumbnail cache (no browser; see
tests/annotate/test_gallery_browser.py for the page itself)."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from curate import gallery
from editkit import rle, schema, store

REASONS = ("clip_direction_low", "mask_too_large", "near_duplicate")


def make_stage(root: Path, n: int = 12, size: int = 96) -> Path:
    """A ``select``-like stage under ``root/data`` from the built-in sample: derived masks (and the shipped ones kept
    where they differ), scores, flags, and every third record rejected with one of :data:`REASONS`."""
    from curate.sources.sample import SampleParams, SampleSource
    from curate.stages.ingest import IngestParams, run_ingest

    data = root / "data"
    run_ingest(SampleSource(SampleParams(n=n, size=size, seed=0)), data / "ingest", IngestParams(), progress=False)
    for shard, records in store.iter_records(data / "ingest" / "records"):
        for i, record in enumerate(records):
            gt = rle.decode(record["gt_mask"])
            derived = np.roll(gt, 3, axis=1) if i % 2 else gt
            record.update(mask=rle.encode(derived), mask_source="diff" if i % 2 else "gt",
                          scores={"clip_direction": 0.1 + 0.05 * i, "mask_area": float(derived.mean())})
            if i % 4 == 1:
                schema.add_flag(record, "grounding_disagrees")
            if i % 3 == 2:
                schema.reject(record, "score" if i % 2 else "select", REASONS[(i // 3) % len(REASONS)])
        store.write_records(data / "select" / "records", shard, records)
    return data


@pytest.fixture(scope="module")
def stage(tmp_path_factory):
    return make_stage(tmp_path_factory.mktemp("gallery"), n=12)


def _calls(path: Path) -> object:
    """The data of one ``GALLERY.<call>([k,] data);`` file."""
    return json.loads(re.fullmatch(r"GALLERY\.\w+\((?:\d+,)?(.*)\);\n", path.read_text(), re.S).group(1))


def test_paging_chunks_and_thumbnail_cache(stage, tmp_path, monkeypatch):
    monkeypatch.setattr(gallery, "PAGE_CHUNK", 5)
    monkeypatch.setattr(gallery, "INDEX_CHUNK", 7)
    out = tmp_path / "gallery"
    first = gallery.build("select", stage, out, progress=False)
    assert first["records"] == 12 and first["thumbs_reused"] == 0
    assert sorted(p.name for p in (out / "pages").iterdir()) == ["p-00000.js", "p-00001.js", "p-00002.js"]
    assert sorted(p.name for p in (out / "index").iterdir()) == ["i-00000.js", "i-00001.js"]
    pages = [_calls(out / "pages" / f"p-{k:05d}.js") for k in range(3)]
    assert [len(p) for p in pages] == [5, 5, 2]
    records = [r for p in pages for r in p]
    meta = _calls(out / "meta.js")
    assert meta["records"] == 12 and meta["index_chunks"] == 2
    rejected = [r for r in records if r["status"] == "rejected"]
    assert len(rejected) == 4 and all(r["reject_reason"] in REASONS for r in rejected)
    assert dict(meta["rejected_by_reason"]) == {reason: sum(r["reject_reason"] == reason for r in rejected)
                                                for reason in REASONS if any(r["reject_reason"] == reason
                                                                             for r in rejected)}
    assert sum(n for _, n in meta["funnel"]) == 4
    index = _calls(out / "index" / "i-00000.js") + _calls(out / "index" / "i-00001.js")
    reasons = meta["vocab"]["reject_reason"]
    assert [reasons[row[3]] or None for row in index] == [r["reject_reason"] for r in records]
    # a derived mask beside a shipped one shows both; a shipped mask used as is shows once
    assert all(("shipped" in r["thumbs"]) == (r["mask_source"] == "diff") for r in records)
    thumbs = sorted((out / "thumbs").rglob("*.jpg"))
    assert len(thumbs) == first["thumbs_written"] > 0
    for record in records:
        for rel in record["thumbs"].values():
            assert (out / rel).is_file()
    stamps = {p: p.stat().st_mtime_ns for p in thumbs}

    second = gallery.build("select", stage, out, progress=False)  # nothing changed: every thumbnail reused
    assert second["thumbs_written"] == 0 and second["thumbs_reused"] == first["thumbs_written"]
    assert {p: p.stat().st_mtime_ns for p in sorted((out / "thumbs").rglob("*.jpg"))} == stamps

    # one record's mask changes: only its mask overlay is drawn again
    shard = store.list_shards(stage / "select" / "records")[0]
    changed = store.read_records(stage / "select" / "records", shard)
    changed[0]["mask"] = rle.encode(np.zeros((96, 96), bool))
    moved = tmp_path / "data"
    store.write_records(moved / "select" / "records", shard, changed)
    third = gallery.build("select", moved, out, images=stage / "ingest" / "images", progress=False)
    assert third["thumbs_written"] == 1


def test_missing_stage_is_one_clear_error(stage, tmp_path):
    from editkit.errors import UserError

    with pytest.raises(UserError, match="no records at .*nothing/records.*stages with records: ingest, select"):
        gallery.build("nothing", stage, tmp_path / "g", progress=False)
