"""`dvc repro` end to end: a committed review changes the exported dataset (fixed mask in, rejected sample out)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from editkit import rle, store
from tests.support.numerics import assert_close

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.integration


def _repro(repo: Path) -> str:
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "PYTHONPATH": str(repo),
           "DVC_NO_ANALYTICS": "1", "OMP_NUM_THREADS": "1"}
    done = subprocess.run([str(bin_dir / "dvc"), "repro", "export"], cwd=repo, env=env, capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


def _exported(repo: Path) -> dict[str, dict]:
    import datasets

    table = datasets.load_from_disk(str(repo / "data/export/dataset")).remove_columns(
        ["source_image", "edited_image", "mask_image"])
    return {row["id"]: row for row in table}


@pytest.fixture(scope="module")
def pipeline_repo(tmp_path_factory):
    """A small copy of the project (code, dvc.yaml, params with a 12-pair 96 px sample) in its own git repo."""
    repo = tmp_path_factory.mktemp("pipeline")
    for name in ("editkit", "curate", "annotate", "benchmarks", "train"):
        shutil.copytree(REPO / name, repo / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("dvc.yaml", ".dvcignore"):
        shutil.copy(REPO / name, repo / name)
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["sample"].update(n=12, size=96)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (repo / "reviews").mkdir()
    (repo / "reviews" / "masks.json").write_text("[]\n")
    for bench in ("bench_gedit", "bench_imgedit"):
        (repo / "reviews" / f"{bench}.json").write_text("[]\n")
    git = ["git", "-c", "user.email=t@t", "-c", "user.name=t"]
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    subprocess.run([sys.executable, "-m", "dvc", "init", "-q"], cwd=repo, check=True)
    subprocess.run([*git, "add", "-A"], cwd=repo, check=True)
    subprocess.run([*git, "commit", "-qm", "init"], cwd=repo, check=True)
    _repro(repo)
    return repo


def test_reviews_reach_select_and_export(pipeline_repo):
    repo = pipeline_repo
    before = _exported(repo)
    # with `[]` the review stage passes records through unchanged: score sees the masks stage's records as they are
    masks = {r["id"]: r for _, shard in store.iter_records(repo / "data/masks/records") for r in shard}
    reviewed = {r["id"]: r for _, shard in store.iter_records(repo / "data/review/records") for r in shard}
    assert masks == reviewed

    rejected_id, fixed_id = sorted(before)[:2]
    fixed = rle.decode(masks[fixed_id]["mask"]).copy()
    fixed[:6, :6] = ~fixed[:6, :6]  # a visible correction in one corner
    reviews = [{"sample_id": rejected_id, "choice": "reject", "comment": "the edit did not happen", "mask": None},
               {"sample_id": fixed_id, "choice": "accept", "comment": "", "mask": rle.encode(fixed)}]
    (repo / "reviews" / "masks.json").write_text(json.dumps(reviews))
    log = _repro(repo)
    assert "Running stage 'review'" in log and "Running stage 'export'" in log

    after = _exported(repo)
    assert rejected_id not in after and set(after) == set(before) - {rejected_id}
    assert np.array_equal(rle.decode(after[fixed_id]["mask"]), fixed)  # what training reads is the reviewed mask
    assert after[fixed_id]["mask_source"] == "reviewed" and after[fixed_id]["mask_method"] == "human"
    scored = {r["id"]: r for _, shard in store.iter_records(repo / "data/score/records") for r in shard}
    assert_close(scored[fixed_id]["scores"]["mask_area"], fixed.mean(), rtol=1e-5,
                 why="the stage stores scores with 6 significant digits")
    import pyarrow.parquet as pq

    rejects = pq.read_table(repo / "data/rejects/rejects.parquet").to_pylist()
    [row] = [r for r in rejects if r["id"] == rejected_id]
    assert row["stage"] == "review" and row["reason"] == "reviewer rejected: the edit did not happen"
