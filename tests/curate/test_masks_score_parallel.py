"""masks + score on worker processes give the records inline work gives; the sampled alignment keeps today's masks;
the integer PSNR path equals the float64 one."""
from __future__ import annotations

import copy
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from perf.masks_score import generate  # noqa: E402


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    from editkit import store

    directory = tmp_path_factory.mktemp("pairs")
    generate(directory, 24, 96)  # recolours, every 3rd a JPEG, every 4th photometrically jittered
    records = store.read_records(directory / "records", "shard-00000")
    return records, store.ImageShard(directory / "images" / "shard-00000.parquet")


def test_processes_give_the_inline_records(pairs):
    from curate.scoring.pair import score_pairs
    from curate.stages.masks import MasksParams, diff_step
    from editkit.executors import RecordPool

    records, images = pairs
    inline = diff_step(copy.deepcopy(records), images, MasksParams(workers=1))
    pool = RecordPool(workers=2, min_records=2)
    try:
        parallel = diff_step(copy.deepcopy(records), images, MasksParams(workers=2), pool)
        assert parallel == inline
        assert all(r.get("mask") is not None for r in parallel)
        scored_inline = score_pairs(copy.deepcopy(inline), images, workers=1)
        scored_parallel = score_pairs(copy.deepcopy(inline), images, pool=pool)
    finally:
        pool.close()
    assert scored_parallel == scored_inline
    assert all("bg_ssim" in r["scores"] and r["phash"] for r in scored_parallel)


def test_a_failing_record_fails_the_shard_on_processes_too(pairs):
    from editkit.executors import RecordPool

    records, images = pairs
    pool = RecordPool(workers=2, min_records=2)
    try:
        with pytest.raises(ZeroDivisionError):
            pool.map(_fail_on_third, copy.deepcopy(records), images)
    finally:
        pool.close()


def _fail_on_third(record, images):
    if record["id"].endswith("3"):
        raise ZeroDivisionError(record["id"])


def test_sampled_alignment_keeps_the_full_sample_masks(pairs):
    """The alignment fitted on 4,096 sampled pixels gives the masks of the former 20,000-pixel fit (IoU >= 0.99)."""
    from curate.masks.diff import DiffParams, diff_mask

    records, images = pairs
    for record in records:
        source, edited = images.source(record["id"]), images.edited(record["id"])
        sampled = diff_mask(source, edited, DiffParams()).mask
        full = diff_mask(source, edited, DiffParams(align_sample=20000)).mask
        union = (sampled | full).sum()
        assert DiffParams().align_sample == 4096
        assert union == 0 or (sampled & full).sum() / union >= 0.99, record["id"]


def test_integer_psnr_equals_the_float64_path():
    from curate.scoring.pair import _masked_psnr_uint8
    from editkit.metrics import masked_psnr
    from tests.support.numerics import assert_close

    rng = np.random.default_rng(3)
    a = rng.integers(0, 256, (40, 56, 3), dtype=np.uint8)
    b = np.clip(a.astype(int) + rng.integers(-12, 12, a.shape), 0, 255).astype(np.uint8)
    region = rng.random((40, 56)) < 0.6
    assert_close(_masked_psnr_uint8(a, b, region), float(masked_psnr(a / 255.0, b / 255.0, region)), dtype=np.float64,
                 accumulations=a.size, why="float64 sum of squares vs the exact integer one")
    assert _masked_psnr_uint8(a, a, region) == float("inf")
