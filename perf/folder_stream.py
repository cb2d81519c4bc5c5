"""The folder source streams its pairs file: peak RSS and throughput over a 10^6-line ``pairs.jsonl``.

    .venv/bin/python perf/folder_stream.py [--lines 1000000] [--out perf/results/folder_stream.json]

Generates a folder with a few small images (PNG, JPEG, one animated GIF) and a ``pairs.jsonl`` of ``--lines`` lines
that reference them round-robin, each with a user id (one in 1,000 repeats an earlier id), then reads it with the
``folder`` source in a fresh subprocess: ``len(source)`` (a counting pass) and one full iteration, which reads every
referenced image (containment checks included) and flags repeated ids and animated images. The subprocess reports its
``ru_maxrss`` before and after reading. Prints a table and writes the JSON. Budget: peak RSS <= 350 MB at 10^6 lines.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from perf import harness  # noqa: E402

BUDGET_MB = 350


def generate(folder: Path, lines: int) -> None:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    names = []
    for i, fmt in enumerate(["PNG", "PNG", "JPEG", "JPEG"]):
        name = f"img{i}.{fmt.lower()}"
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(folder / name, fmt)
        names.append(name)
    frames = [Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)) for _ in range(3)]
    frames[0].save(folder / "anim.gif", save_all=True, append_images=frames[1:], duration=100, loop=0)
    names.append("anim.gif")
    with open(folder / "pairs.jsonl", "w") as handle:
        for n in range(lines):
            user_id = f"pair-{n - 500 if n % 1000 == 999 else n:07d}"  # one in 1,000 repeats an earlier id
            handle.write(json.dumps({"id": user_id, "source": names[n % 4], "edited": names[(n + 1) % len(names)],
                                     "instruction": f"make object {n % 97} a little more red"}) + "\n")


def child(folder: str) -> None:
    from curate.sources.folder import FolderParams, FolderSource

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    started = time.perf_counter()
    source = FolderSource(FolderParams(path=folder))
    total = len(source)
    counted = time.perf_counter()
    rows = errors = duplicates = animated = 0
    for pair in source:
        rows += 1
        errors += pair.error is not None
        duplicates += "duplicate_user_id" in pair.flags
        animated += any(f.startswith("animated_") for f in pair.flags)
    finished = time.perf_counter()
    print(json.dumps({
        "lines": total, "rows": rows, "errors": errors, "duplicate_user_id": duplicates, "animated": animated,
        "rss_after_imports_mb": round(before, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "count_seconds": round(counted - started, 2), "read_seconds": round(finished - counted, 2),
        "rows_per_s": round(rows / (finished - counted), 1),
    }))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=1_000_000)
    harness.add_options(parser, "folder_stream")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child)
        return
    if args.smoke:
        args.lines = 2000
    provenance = harness.Provenance(args.smoke)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "pairs"
        folder.mkdir()
        generate(folder, args.lines)
        pairs_mb = (folder / "pairs.jsonl").stat().st_size / 2**20
        done = subprocess.run([sys.executable, __file__, "--child", str(folder)], capture_output=True, text=True,
                              cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
        if done.returncode:
            sys.exit(done.stderr)
        result = json.loads(done.stdout.strip().splitlines()[-1])
    result.update(pairs_file_mb=round(pairs_mb, 1), budget_peak_rss_mb=BUDGET_MB,
                  within_budget=result["peak_rss_mb"] <= BUDGET_MB, python=sys.version.split()[0],
                  cpus=len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count())
    print(f"{'lines':>9} {'pairs MB':>9} {'peak RSS MB':>12} {'after imports MB':>17} {'rows/s':>9} "
          f"{'dup ids':>8} {'animated':>9} {'errors':>7}")
    print(f"{result['lines']:>9} {result['pairs_file_mb']:>9} {result['peak_rss_mb']:>12} "
          f"{result['rss_after_imports_mb']:>17} {result['rows_per_s']:>9} {result['duplicate_user_id']:>8} "
          f"{result['animated']:>9} {result['errors']:>7}")
    print(f"peak RSS {'within' if result['within_budget'] else 'OVER'} the {BUDGET_MB} MB budget")
    harness.write_result(harness.out_path(args, "folder_stream"), result, provenance)


if __name__ == "__main__":
    main()
