"""Benchmark tooling speed on the CPU: per-item pixel metrics, masked-benchmark build, and evaluate's own overhead.

Measures (2-core dev machine, no GPU; the editing model itself is a tiny random FLUX.1-Kontext, so the evaluate
figures are the toolkit's overhead around the model, not a model's speed):

1. ``pixel_metrics`` (masked PSNR + SSIM on the non-edited region, edit-region L1, mask area) per item at 512² and
   1024², random images and a random 20% mask: median ms over repeats.
2. ``bench build`` on a generated GEdit copy of N items at 512x384 (parquet read, decode/validate, PNG re-encode,
   mask proposals, record + image shards): items/s.
3. ``evaluate`` of the same N items with the tiny pipeline at 64² (2 steps): seconds in editing vs scoring, items/s,
   and a second (fully cached) run, which only rescores.

    .venv/bin/python perf/bench_eval.py [--items 200] [--workdir DIR]
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from perf import harness  # noqa: E402


def time_pixel_metrics(side: int, repeats: int) -> float:  # median ms
    from benchmarks.pixel_metrics import pixel_metrics

    rng = np.random.default_rng(side)
    source = rng.integers(0, 256, (side, side, 3), dtype=np.uint8)
    output = np.clip(source.astype(int) + rng.integers(-20, 20, source.shape), 0, 255).astype(np.uint8)
    mask = rng.random((side, side)) < 0.2
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        pixel_metrics(source, output, mask)
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=200)
    parser.add_argument("--workdir", type=Path, default=None, help="default: a new temporary folder")
    harness.add_options(parser, "bench_eval")
    args = parser.parse_args()
    if args.smoke:
        args.items = 2
    if args.workdir is None:  # a folder of its own: two runs at once (the suite's workers) never share one
        args.workdir = Path(tempfile.mkdtemp(prefix="editkit-bench-perf-"))
    provenance = harness.Provenance(args.smoke)
    sizes = ((64, 1), (128, 1)) if args.smoke else ((512, 20), (1024, 8))
    from benchmarks import build, editor, evaluation, synthetic
    from train.experiment.small_kontext import build_small_kontext

    shutil.rmtree(args.workdir, ignore_errors=True)
    load_before = os.getloadavg()[0]  # the dev machine is shared: report how busy it was
    rows, pixel_ms = [], {}
    for side, repeats in sizes:
        pixel_ms[side] = round(time_pixel_metrics(side, repeats), 2)
        rows.append((f"pixel_metrics {side}²", f"{pixel_ms[side]:.1f} ms/item"))
    source = synthetic.make_gedit_fixture(args.workdir / "gedit", n=args.items,
                                          size=(48, 64) if args.smoke else (384, 512))
    started = time.perf_counter()
    stats = build.build("gedit", source, args.workdir / "built", masks_dir=source / "reference_masks", progress=False)
    build_s = time.perf_counter() - started
    rows.append((f"bench build ({stats['items']} items, 512x384)", f"{stats['items'] / build_s:.1f} items/s"))
    model = build_small_kontext(args.workdir / "tiny-kontext")
    config = editor.EditorConfig(model=str(model), steps=2, resolution=64, multiple_of=16, batch_size=4, device="cpu")
    first = evaluation.evaluate(args.workdir / "built", args.workdir / "run", config, progress=False)["stats"]
    started = time.perf_counter()
    second = evaluation.evaluate(args.workdir / "built", args.workdir / "run", config, progress=False)["stats"]
    cached_s = time.perf_counter() - started
    n = stats["items"]
    rows += [
        ("evaluate: tiny-model editing (64², 2 steps)",
         f"{first['seconds_edit']:.1f} s ({n / first['seconds_edit']:.1f} items/s)"),
        ("evaluate: scoring at 512x384", f"{first['seconds_score']:.1f} s ({n / first['seconds_score']:.1f} items/s)"),
        ("evaluate rerun, all outputs cached", f"{cached_s:.1f} s total, {second['generated']} regenerated"),
    ]
    rows.append(("1-min load average (2 cores) before / after", f"{load_before:.1f} / {os.getloadavg()[0]:.1f}"))
    width = max(len(r[0]) for r in rows)
    print(f"{'measure':<{width}}  result")
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    harness.write_result(harness.out_path(args, "bench_eval"), {
        "items": n, "rows": dict(rows), "build_seconds": round(build_s, 3), "first_run": first,
        "cached_run": second, "cached_run_seconds": round(cached_s, 3),
        "pixel_metrics_ms": {str(side): ms for side, ms in pixel_ms.items()}}, provenance)
    shutil.rmtree(args.workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
