"""masks + score on the local executor vs the Ray executor on the same machine; Ray's fixed costs separately.

    .venv/bin/python perf/ray_executor.py [--records 2000] [--shard-size 500] [--size 256] [--actors 2] [--rounds 1]

Records are perf/masks_score.py's generated pairs (a bundled photo with a random coloured ellipse, a third JPEG).
Rows of the table:
* ``local``: the masks and score stages on the local executor, per-record work on one worker process per core.
* ``ray``: the same stages on a Ray Data actor pool of ``--actors`` actors (0.5 CPU each; the per-record work runs
  inside the actor, so the machine's cores are used the same way), the Ray instance already running; each stage
  starts its actor pool, as a stage command under DVC does.
* ``ray start-up``: ``ray.init`` of a local instance (paid once per stage command under DVC).
* ``actor start-up`` / ``per-shard overhead``: a step that does nothing, over 1 shard and over ``--tiny`` one-record
  shards: what an actor pool costs before any work, and what each shard adds.
Outputs of the two executors are compared record for record. Prints a table and writes JSON.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from perf import harness  # noqa: E402


def noop_step():
    return lambda records, images: records


def stages(directory: Path, executor, workers: int, tag: str) -> float:
    from curate.stages import masks, score

    started = time.perf_counter()
    masks.run(masks.MasksParams(workers=workers), directory / "records", directory / "images",
              directory / f"masks-{tag}", executor=executor)
    score.run(score.ScoreParams(workers=workers), directory / f"masks-{tag}", directory / "images",
              directory / f"score-{tag}", executor=executor)
    return time.perf_counter() - started


def same_records(a: Path, b: Path) -> bool:
    from editkit import store

    return all(store.read_records(a, s) == store.read_records(b, s) for s in store.list_shards(a)) and \
        store.list_shards(a) == store.list_shards(b)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=2000)
    parser.add_argument("--shard-size", type=int, default=500, help="records per shard (one Ray block each)")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--actors", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=1, help="interleaved rounds (local, ray); medians reported")
    parser.add_argument("--tiny", type=int, default=20, help="one-record shards for the per-shard overhead (0: skip)")
    harness.add_options(parser, "ray_executor")
    args = parser.parse_args()
    if args.smoke:
        args.records, args.shard_size, args.size, args.tiny, args.rounds = 6, 3, 64, 0, 1
    provenance = harness.Provenance(args.smoke)

    from editkit import executors
    from editkit.pipeline import Deferred, run_stage
    from perf.masks_score import generate

    resources = executors.StageResources(num_cpus=0.5, concurrency=args.actors)
    ray_executor = executors.RayExecutor(executors.ExecutorConfig(
        kind="ray", stages={name: resources for name in ("masks", "score", "noop")}))
    actor_s = per_shard_s = float("nan")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp) / "pairs"
        generate(work, args.records, args.size, args.shard_size)
        started = time.perf_counter()
        executors.connect("")  # ray.init: paid once per process, reported on its own
        startup_s = time.perf_counter() - started
        local_times, ray_times, identical = [], [], True
        for index in range(args.rounds):
            local_times.append(stages(work, None, 0, f"local{index}"))
            ray_times.append(stages(work, ray_executor, 0, f"ray{index}"))
            identical &= same_records(work / f"score-local{index}", work / f"score-ray{index}") and \
                same_records(work / f"masks-local{index}", work / f"masks-ray{index}")
        if args.tiny:
            tiny, one = Path(tmp) / "tiny", Path(tmp) / "one"
            generate(tiny, args.tiny, 32, 1)
            generate(one, 1, 32, 1)
            started = time.perf_counter()
            run_stage("noop", one / "records", Path(tmp) / "noop1", Deferred(noop_step), progress=False,
                      executor=ray_executor)
            actor_s = time.perf_counter() - started
            started = time.perf_counter()
            run_stage("noop", tiny / "records", Path(tmp) / "noopN", Deferred(noop_step), progress=False,
                      executor=ray_executor)
            per_shard_s = max(0.0, (time.perf_counter() - started - actor_s) / max(1, args.tiny - 1))
    local_s, ray_s = statistics.median(local_times), statistics.median(ray_times)
    result = {
        "records": args.records, "size": args.size, "shards": -(-args.records // args.shard_size),
        "actors": args.actors, "actor_num_cpus": resources.num_cpus, "rounds": args.rounds,
        "local_s": round(local_s, 2), "ray_s": round(ray_s, 2), "local_all_s": local_times, "ray_all_s": ray_times,
        "local_records_per_s": round(args.records / local_s, 2), "ray_records_per_s": round(args.records / ray_s, 2),
        "ray_overhead_pct": round(100 * (ray_s / local_s - 1), 1),
        "ray_startup_s": round(startup_s, 2), "actor_pool_startup_s": round(actor_s, 2),
        "per_shard_overhead_s": round(per_shard_s, 3), "outputs_identical": identical,
    }
    print(f"masks + score, {args.records} records at {args.size} px in {result['shards']} shards, "
          f"medians of {args.rounds}")
    print("| executor | seconds | records/s |\n|---|---:|---:|")
    print(f"| local (worker processes = cores) | {local_s:.2f} | {args.records / local_s:.1f} |")
    print(f"| ray ({args.actors} actors x {resources.num_cpus} CPU) | {ray_s:.2f} | {args.records / ray_s:.1f} |")
    print(f"\nRay over local: {result['ray_overhead_pct']:+.1f}%  | ray.init {startup_s:.2f} s (not included) | "
          f"actor pool start-up {actor_s:.2f} s | per-shard overhead {per_shard_s * 1000:.0f} ms | "
          f"outputs identical: {identical}")
    harness.write_result(harness.out_path(args, "ray_executor"), result, provenance)
    if not identical:
        raise SystemExit("the two executors wrote different records")


if __name__ == "__main__":
    main()
