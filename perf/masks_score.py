"""masks + score throughput vs a naive per-image loop, and peak RSS at 1K vs 10K records.

    .venv/bin/python perf/masks_score.py [--size 128] [--small 1000] [--large 10000] [--naive 200] [--workers 0]

``--large 0`` skips the RSS comparison (throughput only); ``--workers`` is ``masks.workers`` / ``score.workers``
(threads per stage, 0 = one per CPU core).

Records are generated (a bundled photo with a random coloured ellipse, a third JPEG-degraded) straight into record
and image shards. Throughput: the masks and score stages (``curate.stages.*.run``) over ``--small`` records vs a
naive loop over the same pairs (PIL decode, skimage ``structural_similarity`` full map, ``|a - b| > 8`` diff mask).
Peak RSS: each size runs both stages in a fresh subprocess that reports ``ru_maxrss``.
Prints a table and writes ``perf/results/masks_score.json``.
"""
from __future__ import annotations

import argparse
import io
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def generate(directory: Path, n: int, size: int, shard_size: int = 1000) -> None:
    from PIL import Image
    from skimage import data

    from editkit import rle, schema, store

    base = np.asarray(Image.fromarray(data.astronaut()).resize((size, size), Image.Resampling.LANCZOS))
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:size, 0:size]
    source_png = store.encode_png(base)
    for first in range(0, n, shard_size):
        shard = store.shard_name(first // shard_size)
        records, rows = [], []
        for i in range(first, min(n, first + shard_size)):
            cy, cx, ry, rx = rng.uniform(0.2, 0.8, 2).tolist() + rng.uniform(0.05, 0.2, 2).tolist()
            region = ((yy / size - cy) / ry) ** 2 + ((xx / size - cx) / rx) ** 2 <= 1
            edited = base.copy()
            edited[region] = rng.integers(0, 256, 3)
            if i % 3 == 0:
                buffer = io.BytesIO()
                Image.fromarray(edited).save(buffer, format="JPEG", quality=85)
                edited_bytes = buffer.getvalue()
            else:
                edited_bytes = store.encode_png(edited)
            rid = f"perf-{i:07d}"
            records.append(schema.new_record(id=rid, origin="perf", image_shard=shard, width=size, height=size,
                                             has_edited=True, edit_type="recolor", gt_mask=rle.encode(region)))
            rows.append({"id": rid, "source": source_png, "edited": edited_bytes})
        store.write_records(directory / "records", shard, records)
        store.write_image_shard(directory / "images", shard, rows)


def run_stages(directory: Path, workers: int = 0) -> dict:
    """masks then score over ``directory`` (child-process entry point for the RSS measurement)."""
    from curate.stages import masks, score

    started = time.perf_counter()
    m = masks.run(masks.MasksParams(workers=workers), directory / "records", directory / "images", directory / "masks")
    s = score.run(score.ScoreParams(workers=workers), directory / "masks", directory / "images", directory / "score")
    return {"seconds": time.perf_counter() - started, "masks_mean_iou": m["mean_iou"], "records": m["records_in"],
            "score_records": s["records_in"], "masks_records_per_s": m["records_per_s"],
            "score_records_per_s": s["records_per_s"]}


def naive(directory: Path, limit: int) -> float:
    """Seconds for the naive loop over the first ``limit`` pairs."""
    from PIL import Image
    from skimage.metrics import structural_similarity

    from editkit import store

    shard = store.ImageShard(directory / "images" / "shard-00000.parquet")
    ids = [r["id"] for r in store.read_records(directory / "records", "shard-00000")][:limit]
    started = time.perf_counter()
    for rid in ids:
        a = np.asarray(Image.open(io.BytesIO(shard.source_bytes(rid))).convert("RGB"), np.float64) / 255
        b = np.asarray(Image.open(io.BytesIO(shard.edited_bytes(rid))).convert("RGB"), np.float64) / 255
        mask = np.abs(a - b).max(-1) > 8 / 255
        _, full = structural_similarity(a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                        data_range=1.0, channel_axis=2, full=True)
        if (~mask).any():
            float(full[~mask].mean()), float(np.mean((a - b)[~mask] ** 2))
    return time.perf_counter() - started


def child(directory: str, workers: int) -> None:
    result = run_stages(Path(directory), workers)
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--small", type=int, default=1000)
    parser.add_argument("--large", type=int, default=10000, help="records for the RSS comparison; 0 skips it")
    parser.add_argument("--naive", type=int, default=200, help="pairs timed for the naive loop")
    parser.add_argument("--workers", type=int, default=0, help="threads per stage (0: one per CPU core)")
    parser.add_argument("--out", type=Path, default=ROOT / "perf" / "results" / "masks_score.json", help="JSON written")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.child, args.workers)
    from editkit.pipeline import available_cores

    results: dict = {"size": args.size, "machine": f"{available_cores()} shared CPU cores", "workers": args.workers}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in (args.small, args.large) if args.large else (args.small,):
            directory = Path(tmp) / f"n{n}"
            generate(directory, n, args.size)
            out = subprocess.run([sys.executable, __file__, "--child", str(directory), "--workers", str(args.workers)],
                                 check=True,
                                 capture_output=True, text=True, cwd=ROOT)
            stage = json.loads(out.stdout.strip().splitlines()[-1])
            stage["records_per_s"] = n / stage["seconds"]
            results[f"n{n}"] = stage
            rows.append((f"masks+score, {n} records", f"{stage['records_per_s']:.1f} rec/s",
                         f"{stage['peak_rss_mb']:.0f} MB", f"mean_iou {stage['masks_mean_iou']}"))
            if n == args.small:
                seconds = naive(directory, min(args.naive, n))
                results["naive_records_per_s"] = min(args.naive, n) / seconds
                rows.append((f"naive loop, {min(args.naive, n)} records", f"{results['naive_records_per_s']:.1f} rec/s",
                             "", ""))
    results["speedup_vs_naive"] = results[f"n{args.small}"]["records_per_s"] / results["naive_records_per_s"]
    rows.append(("speed-up vs naive (goal >= 5x)", f"{results['speedup_vs_naive']:.2f}x", "", ""))
    if args.large:
        results["rss_ratio_large_vs_small"] = (results[f"n{args.large}"]["peak_rss_mb"]
                                               / results[f"n{args.small}"]["peak_rss_mb"])
        rows.append((f"peak RSS {args.large} / {args.small} (goal <= 1.2x)",
                     f"{results['rss_ratio_large_vs_small']:.2f}x", "", ""))
    for row in rows:
        print(f"{row[0]:<44} {row[1]:>14} {row[2]:>8} {row[3]}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
