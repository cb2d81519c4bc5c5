"""Run a step over every record shard: the uniform interface all record-to-record stages share.

A *step* is a callable ``step(records, images) -> records`` over ONE shard (a batch of ~1,000 records), where
``images`` is the shard's :class:`editkit.store.ImageShard` (or None when the step needs no pixels). Steps are pure
batch -> batch functions: the same function can run here shard by shard, or under a distributed engine (Ray Data's
``map_batches``) unchanged. Steps must return every record they were given (rejected ones included, see
:func:`editkit.schema.reject`); the runner checks this, so no record is ever silently dropped.

A step (or the class / function a :class:`Deferred` builds it with) may declare the record fields it reads
(:mod:`editkit.needs`, e.g. ``needs = Needs(("mask", "scores"))``): an input whose shards lack one fails at start,
in one line naming the field, before any model loads.
"""
from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from editkit import store

Step = Callable[[list[dict[str, Any]], Optional[store.ImageShard]], list[dict[str, Any]]]


@dataclass
class StageStats:
    stage: str
    records_in: int = 0
    records_out: int = 0
    rejected_here: Counter = field(default_factory=Counter)  # reason -> count, rejected by THIS stage
    counters: Counter = field(default_factory=Counter)  # summed from the steps' own `counters` (e.g. requests)
    facts: dict = field(default_factory=dict)  # the steps' `facts` (e.g. the model id a server reported)
    seconds: float = 0.0
    repaired: list = field(default_factory=list)  # outputs a killed run had left hidden, repaired before running
    metrics: Optional[dict] = None  # what ``summarize`` returned (committed with the records when a file is given)

    def as_dict(self) -> dict[str, Any]:
        out = {
            "stage": self.stage,
            "records_in": self.records_in,
            "records_out": self.records_out,
            "rejected_here": dict(sorted(self.rejected_here.items())),
            "seconds": round(self.seconds, 3),
            "records_per_s": round(self.records_in / self.seconds, 2) if self.seconds else None,
        }
        if self.repaired:  # only then: an ordinary run's metrics stay as they were
            out["repaired"] = list(self.repaired)
        return out


# What a record output folder holds: an existing --out with anything else is not replaced (editkit.atomic).
RECORD_OUTPUT = ("shard-*.parquet",)


class Deferred:
    """A step to build where it runs: ``Deferred(build_step, params)`` calls ``build_step(params)`` once per worker.

    Stages pass this (not a built step) so an executor can construct the step inside each worker process, loading
    its models there; the callable and its arguments must be picklable (module-level functions, dataclasses).
    """

    def __init__(self, build: Callable[..., Step], *args: Any, **kwargs: Any):
        self.build, self.args, self.kwargs = build, args, kwargs

    def __call__(self) -> Step:
        return self.build(*self.args, **self.kwargs)


def run_stage(
    stage: str,
    input_dir: Path | str,
    output_dir: Path | str,
    step: Step | Deferred,
    images_dir: Path | str | None = None,
    progress: bool = True,
    executor: Any = None,
    metrics_file: Path | str | None = None,
    summarize: Optional[Callable[[StageStats, Path], dict[str, Any]]] = None,
) -> StageStats:
    """Apply ``step`` to each shard of ``input_dir`` and write ``output_dir`` atomically.

    ``executor``: an :mod:`editkit.executors` executor (default: local, in this process). Executors other than the
    local one need ``step`` as a :class:`Deferred`. Output shards keep the input's names and order either way.

    Inputs and outputs a killed run left hidden are repaired first (:func:`editkit.atomic.recover_input`), and
    said so (``stats.repaired``, in the metrics as ``repaired``). ``summarize(stats, records_dir)`` computes the
    stage's metrics from the finished records before they are committed (``stats.metrics``); with
    ``metrics_file`` they are written in the same atomic step as the records, so a kill never leaves metrics that
    describe other records. An existing ``output_dir`` that is not a record output is refused, never replaced.
    """
    from tqdm.auto import tqdm

    from editkit.executors import LocalExecutor

    executor = executor or LocalExecutor()
    if isinstance(step, Deferred):
        build = step
    elif executor.kind == "local":
        build = lambda: step  # noqa: E731
    else:
        raise ValueError(f"{stage}: this stage's step cannot run on the {executor.kind} executor (it is not a "
                         "pipeline.Deferred); run it with --executor local")
    input_dir, output_dir = Path(input_dir), Path(output_dir)
    repaired = store.recover_input(input_dir) + (store.recover_input(images_dir) if images_dir is not None else [])
    repaired += store.recover(output_dir, *([metrics_file] if metrics_file is not None else []))
    shards = store.list_shards(input_dir)
    if not shards:
        raise FileNotFoundError(f"{stage}: no record shards in {input_dir}; run the previous stage first (dvc repro)")
    check_step_needs(stage, build.build if isinstance(build, Deferred) else step, input_dir)
    stats = StageStats(stage, repaired=repaired)
    started = time.perf_counter()
    total = store.count_records(input_dir)
    files = [Path(metrics_file)] if metrics_file is not None else []
    with store.atomic_dirs(output_dir, files=files, owns=[RECORD_OUTPUT]) as tmps, \
            tqdm(total=total, desc=stage, unit="rec", disable=not progress) as bar:
        tmp = tmps[0]
        # absolute: workers elsewhere (other processes, other nodes) do not share this process's working directory
        images = Path(images_dir).resolve() if images_dir is not None else None
        for result in executor.map_shards(stage, build, input_dir.resolve(), images, shards, Path(tmp).resolve()):
            stats.rejected_here.update(result.rejected_here)
            stats.counters.update(result.counters)
            stats.facts.update(result.facts)
            stats.records_in += result.records_in
            stats.records_out += result.records_out
            bar.update(result.records_in)
        written = set(store.list_shards(tmp))
        if written != set(shards):  # an executor that lost a shard must never commit a partial output
            raise RuntimeError(f"{stage}: output shards {sorted(set(shards) - written)[:3]} missing; nothing committed")
        stats.seconds = time.perf_counter() - started
        if summarize is not None:
            stats.metrics = summarize(stats, Path(tmp))
        if metrics_file is not None:
            store.write_metrics(tmps[1], stats.metrics if stats.metrics is not None else stats.as_dict())
    stats.seconds = time.perf_counter() - started
    return stats


def check_step_needs(stage: str, step: Any, input_dir: Path | str) -> None:
    """Fail (one line) when ``step`` declares a record field the first input shard has no column for."""
    from editkit.needs import needs_of, require, shard_columns

    needs = needs_of(step)
    columns = shard_columns(input_dir) if needs.fields else None
    if columns is not None:
        require(f"{stage}: step {getattr(step, '__name__', type(step).__name__)}", needs, columns,
                f"the input records in {input_dir}")


def for_each_record(work: Callable[[dict[str, Any]], Any], records: list[dict[str, Any]], workers: int = 0) -> None:
    """Call ``work(record)`` for every record, on ``workers`` threads (0: one per available CPU core; 1: inline).

    For a step's per-record pixel work: image decoding (PIL), numpy, OpenCV and pycocotools release the GIL for
    most of it, so threads overlap without the cost of shipping images to processes. ``work`` must change only its
    own record; results do not depend on the thread count. The first exception raised by ``work`` propagates.
    """
    workers = available_cores() if workers <= 0 else workers
    keep_freed_memory()
    if workers == 1 or len(records) < 2:
        for record in records:
            work(record)
        return
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=min(workers, len(records))) as pool:
        for _ in pool.map(work, records):  # consumes the results: re-raises the first failure
            pass


def available_cores() -> int:
    """CPU cores this process may run on (the affinity mask where the OS has one, e.g. in a container)."""
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc mallopt parameters (malloc.h)
_allocator_tuned = False


def keep_freed_memory(mmap_threshold: int = 32 << 20, trim_threshold: int = 128 << 20) -> bool:
    """Let glibc's malloc reuse freed memory instead of returning it to the OS after every large free.

    Per-record pixel work allocates and frees many temporaries of 0.1-10 MB. By default glibc serves each with a
    fresh mmap (worker threads' arenas do not raise the threshold as the main one does) and unmaps it on free, so
    every temporary pays page faults on first touch: measured ~1.5 ms of a ~5 ms masks record at 128 px. Raising
    the mmap and trim thresholds (what MALLOC_MMAP_THRESHOLD_ / MALLOC_TRIM_THRESHOLD_ do) keeps those pages
    mapped for reuse; peak memory is unchanged (freed memory is reused, up to ``trim_threshold`` stays mapped).
    Process-wide, once; a no-op (False) where the C library is not glibc.
    """
    global _allocator_tuned
    if _allocator_tuned:
        return True
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to tune
        return False
    _allocator_tuned = bool(mallopt(_M_MMAP_THRESHOLD, mmap_threshold)) and bool(mallopt(_M_TRIM_THRESHOLD,
                                                                                         trim_threshold))
    return _allocator_tuned
