"""Selection at scale: 1,000,000 synthetic candidates (scores + pHashes, no images) through `editkit curate select`.

Goal (issue 5): peak RSS <= 2 GB and <= 60 s on the 2-core dev machine. The records are written as real record
shards (editkit.schema.RECORD_SCHEMA, 1,000 per shard like ingest writes them), with a skewed edit-type mix, ~5%
upstream rejects, score distributions that fail each filter now and then, and ~5% planted near-duplicates (a few
bits flipped in all three pHashes). The selection runs as a separate process (the real CLI) so its peak RSS is
measured alone (os.wait4).

    .venv/bin/python perf/select_1m.py [--records 1000000] [--workdir DIR] [--keep] [--smoke]
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from editkit import schema, store, taxonomy  # noqa: E402
from perf import harness  # noqa: E402

TYPES = sorted(taxonomy.EDIT_TYPES)
SCORE_NAMES = ("mask_area", "mask_components", "bg_psnr", "bg_ssim")


def synthetic_shard(rng: np.random.Generator, start: int, n: int, pool: np.ndarray) -> pa.Table:
    """One shard of n synthetic scored records; ``pool`` holds earlier hashes to plant near-duplicates from."""
    weights = np.linspace(3, 1, len(TYPES))
    types = np.array(TYPES)[rng.choice(len(TYPES), size=n, p=weights / weights.sum())]
    scope = np.array([taxonomy.EDIT_TYPES[t].scope for t in types])
    area = np.where(scope == "global", 1.0, rng.beta(1.2, 6, n))
    values = np.stack([area, rng.geometric(0.5, n).astype(float), rng.normal(34, 6, n), rng.beta(12, 1.2, n)], 1)
    hashes = rng.integers(0, 2**63, size=(n, 3), dtype=np.int64).astype(np.uint64) * np.uint64(2) + np.uint64(1)
    dup = rng.random(n) < 0.05
    if len(pool):
        parents = pool[rng.integers(0, len(pool), dup.sum())]
        flips = np.uint64(1) << rng.integers(0, 64, size=parents.shape).astype(np.uint64)
        hashes[dup] = parents ^ np.where(rng.random(parents.shape) < 0.5, flips, np.uint64(0))
    ok = rng.random(n) > 0.05
    offsets = pa.array(np.arange(0, 4 * n + 1, 4, dtype=np.int32))
    scores = pa.MapArray.from_arrays(offsets, pa.array(np.tile(SCORE_NAMES, n)), pa.array(values.ravel()))
    columns = {
        "id": pa.array([f"{i:016x}" for i in range(start, start + n)]),
        "edit_type": pa.array(types), "scope": pa.array(scope),
        "scores": scores,
        "status": pa.array(np.where(ok, schema.STATUS_OK, schema.STATUS_REJECTED)),
        "reject_stage": pa.array(np.where(ok, None, "masks")),
        "reject_reason": pa.array(np.where(ok, None, "mask empty after cleanup")),
        "phash": pa.StructArray.from_arrays([pa.array(hashes[:, k]) for k in range(3)], ["source", "edited", "change"]),
    }
    arrays = [columns.get(f.name, pa.nulls(n, f.type)).cast(f.type) for f in schema.RECORD_SCHEMA]
    return pa.Table.from_arrays(arrays, schema=schema.RECORD_SCHEMA), hashes


def generate(directory: Path, records: int, shard_size: int = 1000, seed: int = 0) -> float:
    started = time.perf_counter()
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    pool = np.zeros((0, 3), dtype=np.uint64)
    for index, start in enumerate(range(0, records, shard_size)):
        table, hashes = synthetic_shard(rng, start, min(shard_size, records - start), pool)
        if len(pool) < 20000:  # plant duplicates of the first shards' records
            pool = np.concatenate([pool, hashes])
        pq.write_table(table, directory / f"{store.shard_name(index)}.parquet", compression="zstd")
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--workdir", type=Path, default=None, help="default: a new temporary folder")
    parser.add_argument("--keep", action="store_true", help="keep the generated shards")
    harness.add_options(parser, "select_1m")
    args = parser.parse_args()
    if args.smoke:
        args.records = 3000
    if args.workdir is None:  # a folder of its own: two runs at once (the suite's workers) never share one
        args.workdir = Path(tempfile.mkdtemp(prefix="editkit-select-1m-"))
    provenance = harness.Provenance(args.smoke)
    work = args.workdir
    shutil.rmtree(work, ignore_errors=True)
    gen_s = generate(work / "score", args.records)
    target = min(40000, args.records // 25)
    (work / "params.yaml").write_text(f"select:\n  target_size: {target}\n  seed: 0\n")
    editkit = Path(sys.executable).with_name("editkit")
    command = [str(editkit), "curate", "select", "--params", str(work / "params.yaml"), "--input", str(work / "score"),
               "--out", str(work / "select"), "--rejects", str(work / "rejects"),
               "--metrics", str(work / "select.json"), "--plots", str(work / "plots")]
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    output = process.stdout.read()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"select failed:\n{output}")
    metrics = json.loads((work / "select.json").read_text())
    stated = re.search(r" in ([0-9.]+) s", output)  # the stage's own time, as its command line prints it
    peak_mb = usage.ru_maxrss / 1024  # Linux: KiB
    result = {
        "records": args.records, "shards": len(store.list_shards(work / "score")), "generate_s": round(gen_s, 1),
        "select_wall_s": round(wall, 1), "select_stage_s": float(stated.group(1)) if stated else None,
        "select_cpu_s": round(usage.ru_utime + usage.ru_stime, 1), "peak_rss_mb": round(peak_mb),
        "selected": metrics["selected"], "near_duplicates": metrics["dedupe_clusters_merged"],
        "goal_peak_rss_mb": 2048, "goal_wall_s": 60, "cpu_cores": os.cpu_count(),
        "meets_goal": peak_mb <= 2048 and wall <= 60,
    }
    print(f"{'records':>10} {'shards':>7} {'select wall s':>14} {'peak RSS MB':>12} {'selected':>9} {'near-dups':>10} "
          f"{'goal':>22}")
    print(f"{result['records']:>10,} {result['shards']:>7} {result['select_wall_s']:>14} {result['peak_rss_mb']:>12} "
          f"{result['selected']:>9} {result['near_duplicates']:>10} {'<= 60 s, <= 2048 MB':>22}")
    print("funnel:", ", ".join(f"{r['filter']} -{r['rejected']}" for r in metrics["funnel"]))
    harness.write_result(harness.out_path(args, "select_1m"), {**result, "funnel": metrics["funnel"]}, provenance)
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
