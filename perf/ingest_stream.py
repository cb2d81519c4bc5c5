"""Streaming ingest of a hub-layout dataset by both readers: peak RSS, disk and throughput at two dataset sizes.

    .venv/bin/python perf/ingest_stream.py [--small 10000] [--large 100000] [--size 32]

Generates an InstructPix2Pix-layout copy as the hub lays it out (``data/train-0000k-of-0000n-<hash>.parquet``,
10,000 rows per file, ``--size`` px PNGs, every pair distinct) and ingests the first ``--small`` and ``--large`` rows
with both readers, each run in a fresh subprocess that reports its ``ru_maxrss``: the ``instructpix2pix`` preset
(``ingest.source: preset``, ``streaming: true``) and the generic ``hf`` source (``ingest.source: hf`` with the column
mapping and ``limit``). Disk is what the run wrote: our record + image shards, plus anything that appeared in a
private ``HF_DATASETS_CACHE`` (the goal: nothing). Goals: each reader's RSS at ``--large`` within 1.2x of its RSS at
``--small``, no data files in the cache, and the hf source at least as fast as the preset reader, compared in rows
per CPU second of the ingest (wall-clock rows/s are reported too, but swing with other load on the machine); each
reader and size runs ``--repeats`` times, interleaved, and the run with the most rows per CPU second is reported.
Prints a table and writes ``perf/results/ingest_stream.json``.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
ROWS_PER_FILE = 10_000


def generate(root: Path, n: int, size: int) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq
    from PIL import Image

    image_type = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    schema = pa.schema([("original_prompt", pa.string()), ("original_image", image_type), ("edit_prompt", pa.string()),
                        ("edited_prompt", pa.string()), ("edited_image", image_type)])
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:size, 0:size]
    files = (n + ROWS_PER_FILE - 1) // ROWS_PER_FILE
    (root / "data").mkdir(parents=True, exist_ok=True)

    def encode(array: np.ndarray) -> dict:
        buffer = io.BytesIO()
        Image.fromarray(array).save(buffer, format="PNG")
        return {"bytes": buffer.getvalue(), "path": None}

    for part in range(files):
        digest = f"{part * 7919 + files:016x}"  # stands in for the hub's per-file hash
        path = root / "data" / f"train-{part:05d}-of-{files:05d}-{digest}.parquet"
        with pq.ParquetWriter(path, schema) as writer:
            start = part * ROWS_PER_FILE
            for chunk in range(start, min(n, start + ROWS_PER_FILE), 1000):
                rows = []
                for i in range(chunk, min(n, start + ROWS_PER_FILE, chunk + 1000)):
                    colour = rng.integers(0, 200, 3)
                    image = np.clip(colour + xx[..., None] * 1.5 + yy[..., None], 0, 255).astype(np.uint8)
                    image[0, 0] = (i % 251, (i // 251) % 251, (i // 63001) % 251)  # every pair distinct
                    edited = image.copy()
                    edited[size // 4: size // 2, size // 4: size // 2] = (220, 30, 30)
                    rows.append({"original_prompt": "a picture", "original_image": encode(image),
                                 "edit_prompt": f"add a red square {i}", "edited_prompt": "a picture with a red square",
                                 "edited_image": encode(edited)})
                writer.write_table(pa.Table.from_pylist(rows, schema=schema))


def child(dataset: Path, out: Path, source: str, limit: int | None) -> None:
    from curate.sources.hf import HFParams
    from curate.sources.presets import PresetParams
    from curate.stages.ingest import IngestParams, open_source, run_ingest

    if source == "preset":
        params = IngestParams(source="preset", preset=PresetParams(name="instructpix2pix", path=str(dataset),
                                                                   streaming=True, limit=limit))
    else:
        params = IngestParams(source="hf", hf=HFParams(path=str(dataset), source_column="original_image",
                                                       edited_column="edited_image", instruction_column="edit_prompt",
                                                       limit=limit))
    source = open_source(params)
    cpu_before = resource.getrusage(resource.RUSAGE_SELF)
    started = time.perf_counter()
    metrics = run_ingest(source, out, params, progress=False)
    seconds = time.perf_counter() - started
    cpu_after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (cpu_after.ru_utime + cpu_after.ru_stime) - (cpu_before.ru_utime + cpu_before.ru_stime)
    print(json.dumps({"records": metrics["records"], "ok": metrics["ok"], "seconds": seconds, "cpu_seconds": cpu,
                      "rows_per_s": metrics["records"] / seconds, "rows_per_cpu_s": metrics["records"] / cpu,
                      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def disk_mb(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 2**20 if path.exists() else 0.0


def measure(dataset: Path, work: Path, source: str, limit: int | None) -> dict:
    out, cache = work / f"out-{source}-{limit}", work / f"cache-{source}-{limit}"
    env = {**os.environ, "HF_DATASETS_CACHE": str(cache), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": str(ROOT)}
    command = [sys.executable, __file__, "--child", source, "--dataset", str(dataset), "--work", str(out)]
    if limit is not None:
        command += ["--limit", str(limit)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result.update(shards_mb=disk_mb(out), cache_mb=disk_mb(cache))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", type=int, default=10_000)
    parser.add_argument("--large", type=int, default=100_000)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=2,
                        help="runs per reader and size; the one with the most rows per CPU second is reported")
    parser.add_argument("--compare-hf", type=int, default=1, help="0: measure the preset reader only")
    parser.add_argument("--out", type=Path, default=ROOT / "perf" / "results" / "ingest_stream.json")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--dataset", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--limit", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: checks the script runs (JSON to a temp file)")
    args = parser.parse_args()
    if args.child:
        return child(args.dataset, args.work, args.child, args.limit)
    if args.smoke:
        args.small, args.large, args.repeats, args.compare_hf = 40, 80, 1, 0
        if args.out == parser.get_default("out"):
            args.out = Path(tempfile.gettempdir()) / "editkit-perf-smoke" / "ingest_stream.json"
    results: dict = {"size": args.size, "machine": f"{os.cpu_count()}-core x86 CPU", "runs": {}}
    readers = ("preset", "hf") if args.compare_hf else ("preset",)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        dataset = work / "instructpix2pix"
        started = time.perf_counter()
        generate(dataset, args.large, args.size)
        results["generate_seconds"] = time.perf_counter() - started
        results["dataset_mb"] = disk_mb(dataset)
        for n in (args.small, args.large):
            for _ in range(args.repeats):
                for reader in readers:  # interleaved, so both readers see the same machine load
                    run = measure(dataset, work, reader, n)
                    results["runs"].setdefault(f"{reader}_{n}_all", []).append(run)
                    best = results["runs"].get(f"{reader}_{n}")
                    if best is None or run["rows_per_cpu_s"] > best["rows_per_cpu_s"]:
                        results["runs"][f"{reader}_{n}"] = run
    runs = results["runs"]
    goals: dict = {f"{reader}_rss_ratio": runs[f"{reader}_{args.large}"]["peak_rss_mb"]
                   / runs[f"{reader}_{args.small}"]["peak_rss_mb"] for reader in readers}
    met = all(ratio <= 1.2 for ratio in goals.values())
    if "hf" in readers:
        for n in (args.small, args.large):
            goals[f"hf_vs_preset_rows_per_s_{n}"] = runs[f"hf_{n}"]["rows_per_s"] / runs[f"preset_{n}"]["rows_per_s"]
            goals[f"hf_vs_preset_rows_per_cpu_s_{n}"] = (runs[f"hf_{n}"]["rows_per_cpu_s"]
                                                         / runs[f"preset_{n}"]["rows_per_cpu_s"])
        goals["hf_cache_mb"] = max(runs[f"hf_{n}"]["cache_mb"] for n in (args.small, args.large))
        met = met and goals["hf_cache_mb"] == 0 and all(
            goals[f"hf_vs_preset_rows_per_cpu_s_{n}"] >= 1.0 for n in (args.small, args.large))
    goals["met"] = met
    results["goals"] = goals
    print(f"dataset: {args.large:,} rows at {args.size} px, {results['dataset_mb']:.0f} MB of parquet in hub-named "
          f"shards; {results['machine']}; best of {args.repeats} runs each")
    print(f"{'reader':8s} {'rows':>8s} {'rows/s':>8s} {'rows/CPU-s':>10s} {'peak RSS':>9s} {'our shards':>11s} "
          f"{'HF cache':>9s}")
    for n in (args.small, args.large):
        for reader in readers:
            run = runs[f"{reader}_{n}"]
            print(f"{reader:8s} {n:8,d} {run['rows_per_s']:8.0f} {run['rows_per_cpu_s']:10.0f} "
                  f"{run['peak_rss_mb']:7.0f}MB {run['shards_mb']:9.1f}MB {run['cache_mb']:7.1f}MB")
    print(f"RSS {args.large:,} vs {args.small:,} rows: "
          + ", ".join(f"{r} {goals[f'{r}_rss_ratio']:.2f}x" for r in readers) + " (goal <= 1.2x)")
    if "hf" in readers:
        print("hf vs preset, rows per CPU second: " + ", ".join(
            f"{goals[f'hf_vs_preset_rows_per_cpu_s_{n}']:.2f}x at {n:,}" for n in (args.small, args.large))
            + " (goal >= 1.0x); rows/s (wall clock, load-sensitive): " + ", ".join(
            f"{goals[f'hf_vs_preset_rows_per_s_{n}']:.2f}x" for n in (args.small, args.large)))
    print(f"goals met: {goals['met']}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
