"""dvc.yaml's code deps follow from the import graph (editkit.dvc_deps): complete, and regenerated when stale."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from editkit import dvc_deps

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def graph():
    return dvc_deps.build_graph(ROOT)


def test_dvc_yaml_deps_are_the_import_graphs(graph):
    """Fails naming, per stage, each module the stage imports that its deps miss (fix: `python -m editkit.dvc_deps
    --write`)."""
    assert dvc_deps.check(ROOT, graph) == []


def test_a_missing_module_is_named(tmp_path, graph):
    text = (ROOT / "dvc.yaml").read_text()
    stages = yaml.safe_load(text)["stages"]
    assert "editkit/store.py" in stages["ingest"]["deps"]
    (tmp_path / "dvc.yaml").write_text(text.replace("      - editkit/store.py\n", "", 1))
    problems = dvc_deps.check(tmp_path, graph)
    assert problems == ["fingerprint: deps miss 1 imported module(s): editkit.store"]  # the first stage listing it
    shutil.copy(ROOT / "dvc.yaml", tmp_path / "dvc.yaml")
    stale = text.replace("      - editkit/store.py\n", "      - editkit/store.py\n      - editkit/clip.py\n", 1)
    (tmp_path / "dvc.yaml").write_text(stale)
    assert dvc_deps.check(tmp_path, graph) == [
        "fingerprint: code deps differ from the import graph's (stale or unordered entries)"]


def test_write_regenerates_code_deps_and_keeps_the_rest(tmp_path, graph):
    text = (ROOT / "dvc.yaml").read_text()
    # hand-written deps as they were: a few code paths, data deps with comments
    start = text.index("  masks:\n")
    block = text[start:text.index("    params:", start)]
    old = ("  masks:\n    cmd: editkit curate masks\n    deps:\n      - curate/stages/masks.py\n      - curate/masks\n"
           "      - editkit/mllm/prompts   # masks.grounding.detector: mllm (ground_boxes_<version>.txt)\n"
           "      - data/rewrite/records\n      - data/ingest/images\n")
    (tmp_path / "dvc.yaml").write_text(text.replace(block, old))
    assert "masks: deps miss" in dvc_deps.check(tmp_path, graph)[0]
    assert dvc_deps.write(tmp_path, graph) == ["masks"]
    assert (tmp_path / "dvc.yaml").read_text() == text  # byte for byte what is committed
    assert dvc_deps.write(tmp_path, graph) == []


def test_lazy_and_function_level_imports_count(graph):
    ingest = dvc_deps.stage_modules(graph, "editkit curate ingest")
    # registry entries are strings ("curate.sources.sample:open_sample"), presets are lazy module names
    assert {"curate.sources.sample", "curate.sources.folder", "curate.sources.presets.magicbrush"} <= ingest
    review = dvc_deps.stage_modules(graph, "editkit annotate merge --records x")
    assert {"annotate.cli", "annotate.merge"} <= review  # the command function's own imports
    assert "curate.stages.ingest" not in review
    assert dvc_deps.stage_modules(graph, "python something.py") is None
