"""The `rewrite` stage: pass-through (`none`), MLLM refinement with repair and fallback, metrics."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from curate import schema, store
from curate.stages import rewrite


def _write_ingest(root: Path, n: int = 6) -> tuple[Path, Path]:
    """A small ingest output: records + image shards, one of them rejected by ingest."""
    rng = np.random.default_rng(0)
    records, rows = [], []
    for i in range(n):
        rid = f"r{i:03d}"
        source = rng.integers(0, 255, (32, 48, 3), dtype=np.uint8)
        edited = source.copy()
        edited[4:12, 8:20] = 255
        records.append(schema.new_record(id=rid, origin="sample", image_shard="shard-00000", width=48, height=32,
                                         has_edited=True, instruction=f"make the box {i} white",
                                         edit_type="recolor", target_phrases=["box"]))
        rows.append({"id": rid, "source": store.encode_png(source), "edited": store.encode_png(edited)})
    schema.reject(records[-1], "ingest", "corrupt image")
    store.write_records(root / "ingest/records", "shard-00000", records)
    store.write_image_shard(root / "ingest/images", "shard-00000", rows)
    return root / "ingest/records", root / "ingest/images"


def _params(tmp_path: Path, **section) -> Path:
    import yaml

    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump({"rewrite": section}))
    return path


def test_none_backend_passes_through(tmp_path):
    records_dir, images_dir = _write_ingest(tmp_path)
    params = _params(tmp_path, backend="none")
    rewrite.main(params, records_dir, images_dir, tmp_path / "rewrite/records", tmp_path / "metrics/rewrite.json")
    out = store.read_records(tmp_path / "rewrite/records", "shard-00000")
    assert [r["id"] for r in out] == [f"r{i:03d}" for i in range(6)]
    for record in out[:-1]:
        assert record["instruction_refined"] == record["instruction"]
        assert record["rewrite_status"] == "none"
        assert record["edit_type"] == "recolor" and record["target_phrases"] == ["box"] and record["scope"] == "local"
    assert out[-1]["status"] == "rejected" and out[-1]["rewrite_status"] is None
    metrics = json.loads((tmp_path / "metrics/rewrite.json").read_text())
    assert metrics["backend"] == "none" and "passed through" in metrics["note"]
    assert metrics["outcomes"] == {"none": 5, "skipped_rejected": 1}


def test_unknown_param_key_is_an_error(tmp_path):
    records_dir, images_dir = _write_ingest(tmp_path)
    with pytest.raises(ValueError, match="unknown key"):
        rewrite.main(_params(tmp_path, backend="none", tempreature=0.2), records_dir, images_dir,
                     tmp_path / "out", tmp_path / "m.json")
