"""Per-record work on a thread pool (editkit.pipeline.for_each_record): same records whatever the thread count."""
from __future__ import annotations

import copy
import threading

import pytest

from editkit import store
from editkit.pipeline import available_cores, for_each_record
from curate.scoring.pair import score_pairs
from curate.stages.masks import MasksParams, diff_step
from curate.stages.score import ScoreParams


def test_for_each_record_visits_every_record_once_on_several_threads():
    records = [{"id": str(i), "hits": 0} for i in range(200)]
    threads = set()

    def work(record):
        threads.add(threading.get_ident())
        record["hits"] += 1

    for_each_record(work, records, workers=4)
    assert [r["hits"] for r in records] == [1] * 200
    assert len(threads) > 1  # really ran on a pool
    threads.clear()
    for_each_record(work, records, workers=1)
    assert threads == {threading.get_ident()} and {r["hits"] for r in records} == {2}  # workers=1: inline


def test_for_each_record_propagates_the_first_failure():
    def work(record):
        if record["id"] == "7":
            raise RuntimeError("boom on 7")

    with pytest.raises(RuntimeError, match="boom on 7"):
        for_each_record(work, [{"id": str(i)} for i in range(20)], workers=3)


def test_workers_param_is_checked():
    assert available_cores() >= 1
    for params in (MasksParams, ScoreParams):
        with pytest.raises(ValueError, match="workers"):
            params(workers=-1)


def test_masks_and_scores_do_not_depend_on_the_thread_count(sample_ingest_dir):
    shard = store.list_shards(sample_ingest_dir / "records")[0]
    records = store.read_records(sample_ingest_dir / "records", shard)
    records[1]["id"] = "not-in-the-shard"  # a rejection in the middle of the batch
    images = store.ImageStore(sample_ingest_dir / "images").shard(shard)
    masked = {w: diff_step(copy.deepcopy(records), images, MasksParams(workers=w)) for w in (1, 3)}
    assert masked[1] == masked[3]
    assert masked[1][1]["status"] == "rejected" and sum(r.get("mask") is not None for r in masked[1]) > 10
    scored = {w: score_pairs(copy.deepcopy(masked[1]), images, workers=w) for w in (1, 3)}
    assert scored[1] == scored[3]
    assert sum("bg_ssim" in (r.get("scores") or {}) for r in scored[1]) > 5



def test_keep_freed_memory_is_idempotent():
    from editkit.pipeline import keep_freed_memory

    first = keep_freed_memory()
    assert keep_freed_memory() == first  # a second call changes nothing
    import sys

    if sys.platform == "linux":
        import platform

        if platform.libc_ver()[0] == "glibc":
            assert first  # glibc: the thresholds were set
