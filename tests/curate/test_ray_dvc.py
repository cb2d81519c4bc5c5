"""`dvc repro` of the curation stages with `executor.kind: ray` writes exactly what the local executor writes."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from editkit import store

pytest.importorskip("ray")
ROOT = Path(__file__).resolve().parents[2]
STAGES = ("rewrite", "masks", "review", "score", "select")


def _project(directory: Path, executor: dict) -> Path:
    """A copy of the project's pipeline files (dvc.yaml, params.yaml, reviews/) in a fresh git repo."""
    directory.mkdir()
    for name in (".dvcignore", "reviews"):
        source = ROOT / name
        (shutil.copytree if source.is_dir() else shutil.copy)(source, directory / name)
    # the curation stages only: the export's leak check (and its deps on the built benchmarks) is off here
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    export = stages["stages"]["export"]
    export["deps"] = [d for d in export["deps"] if not str(d).startswith("data/bench")]
    (directory / "dvc.yaml").write_text(yaml.safe_dump(stages, sort_keys=False))
    for package in ("curate", "annotate", "editkit"):  # the stages' code deps, hashed by dvc
        shutil.copytree(ROOT / package, directory / package, ignore=shutil.ignore_patterns("__pycache__"))
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["sample"].update(n=12, size=64)
    params["ingest"]["shard_size"] = 4
    params["select"]["target_size"] = 6
    params["executor"] = executor
    params["export"]["leak_check"]["enabled"] = False
    (directory / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = _env()
    for command in (["git", "init", "-q"], [sys.executable, "-m", "dvc", "init", "-q"]):
        subprocess.run(command, cwd=directory, check=True, env=env)
    return directory


def _env() -> dict[str, str]:
    bin_dir = str(Path(sys.executable).parent)
    return {**os.environ, "PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""), "DVC_NO_ANALYTICS": "1",
            "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)}


def _repro(directory: Path) -> None:
    run = subprocess.run([sys.executable, "-m", "dvc", "repro", "export", "review"], cwd=directory, env=_env(),
                         capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]


@pytest.mark.integration
def test_dvc_repro_on_ray_equals_local(tmp_path, ray_session):
    local = _project(tmp_path / "local", {"kind": "local"})
    distributed = _project(tmp_path / "ray", {"kind": "ray", "address": "auto",  # the test session's instance
                                               "stages": {s: {"num_cpus": 0.25, "concurrency": 2} for s in STAGES}})
    _repro(local)
    _repro(distributed)
    for stage in STAGES:
        a, b = local / "data" / stage / "records", distributed / "data" / stage / "records"
        assert store.list_shards(a) == store.list_shards(b) and len(store.list_shards(a)) == 3, stage
        for shard in store.list_shards(a):
            assert store.read_records(a, shard) == store.read_records(b, shard), (stage, shard)
    exported = [sorted(p.name for p in (d / "data" / "export").rglob("*")) for d in (local, distributed)]
    assert exported[0] == exported[1]
