"""The ingest stage: shards, ids, duplicates, determinism, atomicity under a crash and a SIGKILL, the CLI."""
from __future__ import annotations

import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from editkit import rle, schema, store
from curate.sources import RawPair
from curate.sources.sample import SampleParams, SampleSource
from curate.stages.ingest import IngestParams, run_ingest

REPO = Path(__file__).resolve().parents[2]


def png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def digest_tree(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


def test_shared_fixture_has_the_sample_with_gt_masks(sample_ingest_dir):
    records = [r for _, shard in store.iter_records(sample_ingest_dir / "records") for r in shard]
    assert len(records) == 24 and all(schema.is_ok(r) for r in records)
    images = store.ImageStore(sample_ingest_dir / "images")
    for record in records[:6]:
        assert record["gt_mask"]["size"] == [128, 128] and record["scope"] in ("local", "global")
        assert images.source(record).shape == (128, 128, 3) and images.edited(record).shape == (128, 128, 3)
        assert json.loads(record["meta"])["photo"]


def test_shards_ids_and_images_line_up(tmp_path):
    params = SampleParams(n=11, size=64, seed=1)
    metrics = run_ingest(SampleSource(params), tmp_path / "ingest", IngestParams(shard_size=4), progress=False)
    assert metrics["shards"] == 3 and metrics["ok"] == 11 and sum(metrics["edit_types"].values()) == 11
    assert store.list_shards(tmp_path / "ingest/records") == store.list_shards(tmp_path / "ingest/images")
    pairs = list(SampleSource(params))
    for index, (shard, records) in enumerate(store.iter_records(tmp_path / "ingest/records")):
        image_shard = store.ImageShard(tmp_path / "ingest/images" / f"{shard}.parquet")
        for offset, record in enumerate(records):
            pair = pairs[index * 4 + offset]
            assert record["id"] == schema.content_id(pair.source, pair.edited, pair.instruction)
            assert record["image_shard"] == shard and record["id"] in image_shard
            assert image_shard.source_bytes(record["id"]) == pair.source  # valid RGB PNG: stored as it came
            np.testing.assert_array_equal(rle.decode(record["gt_mask"]), pair.gt_mask)


def test_a_shard_of_only_rejects_still_has_its_image_file(tmp_path):
    bad = [RawPair("test", f"k{i}", "x", b"junk", b"junk" + bytes([i])) for i in range(3)]
    metrics = run_ingest(bad, tmp_path / "out", IngestParams(shard_size=2), progress=False)
    assert metrics == {**metrics, "records": 3, "ok": 0, "rejected": 3, "shards": 2}
    assert store.list_shards(tmp_path / "out/images") == ["shard-00000", "shard-00001"]
    assert store.count_records(tmp_path / "out/images") == 0 and store.count_records(tmp_path / "out/records") == 3


def test_rerun_writes_identical_files(tmp_path):
    params = SampleParams(n=6, size=64, seed=2)
    run_ingest(SampleSource(params), tmp_path / "a", IngestParams(), progress=False)
    run_ingest(SampleSource(params), tmp_path / "b", IngestParams(), progress=False)
    assert digest_tree(tmp_path / "a") == digest_tree(tmp_path / "b")


def test_duplicates_are_rejected_and_kept(tmp_path):
    image = np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    pair = lambda key: RawPair("test", key, "make it red", png(image), png(255 - image))  # noqa: E731
    metrics = run_ingest([pair("first"), pair("second")], tmp_path / "out", IngestParams(), progress=False)
    first, second = store.read_records(tmp_path / "out/records", "shard-00000")
    assert schema.is_ok(first) and second["status"] == "rejected"
    assert second["reject_reason"] == "duplicate: same content as first" and second["image_shard"] is None
    assert metrics["rejects"] == {"duplicate": 1}
    assert store.ImageShard(tmp_path / "out/images/shard-00000.parquet").__contains__(first["id"])


def test_a_crash_mid_run_leaves_the_previous_output(tmp_path):
    out = tmp_path / "ingest"
    run_ingest(SampleSource(SampleParams(n=2, size=64)), out, IngestParams(), progress=False)
    before = digest_tree(out)

    def crashing():
        yield from SampleSource(SampleParams(n=3, size=64, seed=5))
        raise RuntimeError("source died")

    with pytest.raises(RuntimeError, match="source died"):
        run_ingest(crashing(), out, IngestParams(shard_size=1), progress=False)
    assert digest_tree(out) == before
    assert [p.name for p in tmp_path.iterdir()] == ["ingest"]  # the temp dir was removed


KILLED_RUN = """
import sys, time
from curate.sources.sample import SampleParams, SampleSource
from curate.stages.ingest import IngestParams, run_ingest

def slow():
    for i, pair in enumerate(SampleSource(SampleParams(n=50, size=32))):
        if i == 3:
            print("started", flush=True)
        time.sleep(0.2)
        yield pair

run_ingest(slow(), sys.argv[1], IngestParams(shard_size=2), progress=False)
print("finished", flush=True)
"""


@pytest.mark.integration  # spawns a Python process and SIGKILLs it
def test_sigkill_mid_run_leaves_no_partial_output(tmp_path):
    out = tmp_path / "ingest"
    process = subprocess.Popen([sys.executable, "-c", textwrap.dedent(KILLED_RUN), str(out)], cwd=REPO,
                               stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        assert process.stdout.readline().strip() == "started"
        time.sleep(0.5)  # several shards are now written inside the temp dir
        temp_dirs = list(tmp_path.glob("ingest.tmp-*"))
        assert temp_dirs and list(temp_dirs[0].rglob("shard-*.parquet"))
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert not out.exists()  # neither records/ nor images/: no half-written output for DVC or the next stage


def test_cli_with_a_folder_source_writes_metrics(tmp_path):
    from typer.testing import CliRunner

    from curate.cli import app

    rng = np.random.default_rng(0)
    (tmp_path / "pairs").mkdir()
    lines = []
    for i in range(3):
        image = rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)
        (tmp_path / "pairs" / f"{i}_s.png").write_bytes(png(image))
        (tmp_path / "pairs" / f"{i}_e.png").write_bytes(png(image[::-1].copy()))
        lines.append(json.dumps({"source": f"{i}_s.png", "edited": f"{i}_e.png", "instruction": f"flip {i}"}))
    lines.append(json.dumps({"source": "gone.png", "edited": "0_e.png", "instruction": "x"}))
    (tmp_path / "pairs/pairs.jsonl").write_text("\n".join(lines))
    params = tmp_path / "params.yaml"
    params.write_text(f"ingest:\n  source: folder\n  folder:\n    path: {tmp_path / 'pairs'}\n")
    args = ["ingest", "--params", str(params), "--out", str(tmp_path / "data"), "--metrics", str(tmp_path / "m.json"),
            "--no-progress"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert metrics["ok"] == 3 and metrics["rejects"] == {"missing source image": 1}
    assert "rejected      1  missing source image" in result.output

    params.write_text("ingest:\n  source: folder\n  folder:\n    path: x\n  colour: red\n")
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2 and "unknown key ingest.colour" in result.output
    assert str(params) in result.output and "Traceback" not in result.output
