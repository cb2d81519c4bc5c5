"""The `editkit view` gallery at two sizes: records/s and peak RSS of a build, then of a rebuild (thumbnails cached).

    .venv/bin/python perf/gallery.py [--small 200] [--large 100000] [--size 24]

Writes a synthetic stage (``--size`` px PNG pairs, every image distinct, a derived and a shipped mask on half the
records, every fifth record rejected with one of four reasons, 1,000 records per shard) and builds its gallery in a
fresh subprocess per run, which reports its ``ru_maxrss``. Each size is built twice into the same folder: the first
build writes every thumbnail, the second finds them all by their content hash and writes none. Goals: linear time
(the first build's records/s at ``--large`` within 2x of that at ``--small``) and bounded memory (peak RSS at
``--large`` within 1.3x of that at ``--small``). Prints a table and writes ``perf/results/gallery.json``.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from perf import harness  # noqa: E402

SHARD = 1000
REASONS = ("clip_direction_low", "mask_too_large", "near_duplicate", "quality_low")


def generate(data: Path, n: int, size: int) -> None:
    from PIL import Image

    from editkit import rle, schema, store

    yy, xx = np.mgrid[0:size, 0:size]
    mask = (yy >= size // 4) & (yy < size // 2) & (xx >= size // 4) & (xx < size // 2)
    derived = rle.encode(np.roll(mask, 1, axis=1))
    shipped = rle.encode(mask)

    def png(array: np.ndarray) -> bytes:
        buffer = io.BytesIO()
        Image.fromarray(array).save(buffer, format="PNG", compress_level=1)
        return buffer.getvalue()

    for first in range(0, n, SHARD):
        shard = store.shard_name(first // SHARD)
        records, rows = [], []
        for i in range(first, min(n, first + SHARD)):
            image = np.clip(np.array([i % 200, (i * 7) % 200, (i * 13) % 200]) + xx[..., None] * 2, 0, 255)
            image = image.astype(np.uint8)
            image[0, 0] = (i % 251, (i // 251) % 251, (i // 63001) % 251)  # every image distinct
            edited = image.copy()
            edited[mask] = (220, 30, 30)
            rid = f"{i:016x}"
            rows.append({"id": rid, "source": png(image), "edited": png(edited)})
            record = schema.new_record(id=rid, origin="synthetic", origin_key=str(i), image_shard=shard, width=size,
                                       height=size, has_edited=True, instruction=f"add a red square {i}",
                                       edit_type=("add", "remove", "recolor")[i % 3], gt_mask=shipped,
                                       mask=derived if i % 2 else shipped, mask_source="diff" if i % 2 else "gt",
                                       scores={"clip_direction": (i % 97) / 97, "mask_area": 0.06})
            if i % 5 == 4:
                schema.reject(record, "score", REASONS[(i // 5) % len(REASONS)])
            records.append(record)
        store.write_image_shard(data / "ingest" / "images", shard, rows)
        store.write_records(data / "select" / "records", shard, records)


def child(data: Path, out: Path) -> None:
    import PIL.Image  # noqa: F401  (imports outside the timing: the figure is the build's per-record cost)
    import tqdm.auto  # noqa: F401

    from curate import gallery

    started = time.perf_counter()
    result = gallery.build("select", data, out, progress=False)
    seconds = time.perf_counter() - started
    print(json.dumps({**result, "seconds": seconds, "records_per_s": result["records"] / seconds,
                      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def measure(data: Path, out: Path) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, __file__, "--child", str(data), str(out)], env=env, capture_output=True,
                          text=True, check=True)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result.pop("index", None)
    result["gallery_mb"] = sum(p.stat().st_size for p in out.rglob("*") if p.is_file()) / 2**20
    return result


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--child":
        child(Path(sys.argv[2]), Path(sys.argv[3]))
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", type=int, default=200)
    parser.add_argument("--large", type=int, default=100_000)
    parser.add_argument("--size", type=int, default=24, help="image side, pixels")
    harness.add_options(parser, "gallery")
    args = parser.parse_args()
    if args.smoke:
        args.small, args.large = 20, 60
    provenance = harness.Provenance(args.smoke)
    runs = {}
    work = Path(tempfile.mkdtemp(prefix="editkit-perf-gallery-"))
    try:
        for n in (args.small, args.large):
            data = work / f"data-{n}"
            began = time.perf_counter()
            generate(data, n, args.size)
            generated = time.perf_counter() - began
            first = measure(data, work / f"gallery-{n}")
            again = measure(data, work / f"gallery-{n}")
            runs[str(n)] = {"records": n, "generate_seconds": generated, "build": first, "rebuild": again}
            shutil.rmtree(work / f"gallery-{n}")
            shutil.rmtree(data)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    small, large = runs[str(args.small)], runs[str(args.large)]
    goals = {"speed_ratio": large["build"]["records_per_s"] / small["build"]["records_per_s"],
             "rss_ratio": large["build"]["peak_rss_mb"] / small["build"]["peak_rss_mb"]}
    goals["met"] = goals["speed_ratio"] >= 0.5 and goals["rss_ratio"] <= 1.3
    print(f"{'records':>9}{'build rec/s':>13}{'peak RSS MB':>13}{'rebuild rec/s':>15}{'peak RSS MB':>13}"
          f"{'thumbs':>9}{'folder MB':>11}")
    for run in runs.values():
        b, r = run["build"], run["rebuild"]
        print(f"{run['records']:>9}{b['records_per_s']:>13.0f}{b['peak_rss_mb']:>13.0f}{r['records_per_s']:>15.0f}"
              f"{r['peak_rss_mb']:>13.0f}{b['thumbs_written']:>9}{b['gallery_mb']:>11.1f}")
    print(f"goals (records/s ratio >= 0.5, RSS ratio <= 1.3): {'met' if goals['met'] else 'NOT met'} {goals}")
    harness.write_result(harness.out_path(args, "gallery"), {"size": args.size, "runs": runs, "goals": goals},
                         provenance)


if __name__ == "__main__":
    main()
