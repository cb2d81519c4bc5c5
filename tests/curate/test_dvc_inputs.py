"""Real DVC on a small copy of the project: the stages re-run exactly when their code or their data changed.

* a change to a module two imports below a stage's entry makes `dvc status` name that stage (and not a stage that
  does not import it): the deps are generated from the import graph (editkit.dvc_deps);
* the `fingerprint` stage turns the files a folder source reads into a manifest ingest depends on: unchanged data
  is a no-op (only fingerprint runs, from its hash cache), one changed image re-runs ingest and every stage after it
  (the pipeline up to `masks`: ingest -> rewrite -> masks, masks reading ingest's images too).
"""
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
from PIL import Image

from editkit import dvc_deps

ROOT = Path(__file__).resolve().parents[2]
TARGET = "masks"  # the pipeline up to the masks stage: ingest's outputs feed rewrite, and both feed masks
pytestmark = pytest.mark.integration


def _env(repo: Path) -> dict[str, str]:
    bin_dir = str(Path(sys.executable).parent)
    return {**os.environ, "PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""), "DVC_NO_ANALYTICS": "1",
            "PYTHONPATH": str(repo), "OMP_NUM_THREADS": "1"}


def _dvc(repo: Path, *args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=repo, env=_env(repo), capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


def _ran(log: str) -> set[str]:
    return {line.split("'")[1] for line in log.splitlines() if line.startswith("Running stage '")}


def _dataset(folder: Path, n: int = 4) -> None:
    """A folder source: ``n`` 48 px pairs (a coloured square added) listed in pairs.jsonl."""
    folder.mkdir()
    rng = np.random.default_rng(0)
    lines = []
    for i in range(n):
        source = rng.integers(0, 255, (48, 48, 3), dtype=np.uint8)
        edited = source.copy()
        edited[8 + i:24 + i, 10:30] = (255, 0, 0)
        Image.fromarray(source).save(folder / f"{i}.png")
        Image.fromarray(edited).save(folder / f"{i}_edit.png")
        lines.append(json.dumps({"source": f"{i}.png", "edited": f"{i}_edit.png", "edit_type": "add",
                                 "instruction": f"add a red box {i}"}))
    (folder / "pairs.jsonl").write_text("\n".join(lines) + "\n")


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A copy of the project's code, dvc.yaml and reviews/ in a fresh git+dvc repo; the source is a folder outside
    it; `dvc repro masks` has run once."""
    base = tmp_path_factory.mktemp("dvc_inputs")
    repo, data = base / "repo", base / "pairs"
    repo.mkdir()
    _dataset(data)
    for name in dvc_deps.PACKAGES:
        shutil.copytree(ROOT / name, repo / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("dvc.yaml", ".dvcignore", ".gitignore", "reviews"):  # .gitignore: data/ is git's to ignore
        (shutil.copytree if (ROOT / name).is_dir() else shutil.copy)(ROOT / name, repo / name)
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["ingest"].update(source="folder", shard_size=2)
    params["ingest"]["folder"]["path"] = str(data)
    params["select"]["target_size"] = 3
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)  # dvc needs a repository, not a commit
    _dvc(repo, "init", "-q")
    assert _ran(_dvc(repo, "repro", TARGET)) == {"fingerprint", "ingest", "rewrite", "masks"}
    return repo, data


def test_unchanged_data_is_a_noop(project):
    repo, _ = project
    manifest = (repo / "data/fingerprint/inputs.json").read_text()
    log = _dvc(repo, "repro", TARGET)
    assert _ran(log) == {"fingerprint"}  # always_changed; it finds every file unchanged ...
    assert "Stage 'ingest' didn't change, skipping" in log  # ... and ingest and the rest are skipped
    assert "fingerprint: 9 file(s), 0 hashed, 9 unchanged" in log  # from the hash cache: nothing re-read
    assert (repo / "data/fingerprint/inputs.json").read_text() == manifest  # deterministic: no timestamps
    cache = json.loads((repo / "data/cache/fingerprint.json").read_text())
    assert len(cache) == 9  # pairs.jsonl + 8 images, each with [size, mtime_ns, sha256]


# The masks stage's deps as they were written by hand before they were generated from the import graph.
HAND_WRITTEN_MASKS_DEPS = ("curate/stages/masks.py", "curate/masks/", "editkit/mllm/prompts/")


def test_code_two_imports_deep_changes_the_stage(project):
    """Edit a module two imports below the masks stage's entry, one its hand-written deps missed: `dvc status` names
    masks and the dep that covers the file, and not `rewrite`, which does not import it."""
    repo, _ = project
    graph = dvc_deps.build_graph(ROOT)
    direct = graph.imports["curate.stages.masks"]
    two_deep = set().union(*(graph.imports[m] for m in direct)) - direct - {"curate.stages.masks"}
    rewrite = dvc_deps.stage_modules(graph, "editkit curate rewrite")
    files = sorted(graph.modules[m].relative_to(ROOT).as_posix() for m in two_deep - rewrite)
    candidates = [f for f in files if not f.endswith("__init__.py") and not f.startswith(HAND_WRITTEN_MASKS_DEPS)]
    assert candidates, files
    helper = candidates[0]
    path = repo / helper
    original = path.read_bytes()
    try:
        path.write_bytes(original + b"\n# an edit\n")
        status = _dvc(repo, "status", "masks", "rewrite")
    finally:
        path.write_bytes(original)
    deps = [d for d in yaml.safe_load((repo / "dvc.yaml").read_text())["stages"]["masks"]["deps"]
            if helper == d or helper.startswith(d + "/")]
    assert deps and status.startswith("masks:") and f"modified:           {deps[0]}\n" in status, (helper, status)
    assert "rewrite" not in status, status
    assert "masks" not in _dvc(repo, "status", "masks")  # restored: the same content is the same hash


def test_one_changed_image_reruns_ingest_and_after(project):
    """One byte of one image changes: fingerprint hashes that file alone, its manifest changes, and ingest and every
    stage after it re-run."""
    repo, data = project
    image = data / "2_edit.png"
    array = np.asarray(Image.open(image)).copy()
    array[40, 40, 1] ^= 1  # one byte of the pixels
    Image.fromarray(array).save(image)
    before = (repo / "data/fingerprint/inputs.json").read_text()
    log = _dvc(repo, "repro", TARGET)
    assert _ran(log) == {"fingerprint", "ingest", "rewrite", "masks"}, log[-3000:]
    assert "fingerprint: 9 file(s), 1 hashed, 8 unchanged" in log
    assert (repo / "data/fingerprint/inputs.json").read_text() != before
