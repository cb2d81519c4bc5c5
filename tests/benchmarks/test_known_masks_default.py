"""`bench.masks_dir` belongs to the configured copy: with the shipped params.yaml (fixture masks configured), a build
of another copy (`--path`) neither fails on the fixture's missing masks nor borrows them, and a build of the missing
default copy says the copy is missing (not the masks)."""
import json
import shutil
from pathlib import Path

from typer.testing import CliRunner

from editkit.cli import app

ROOT = Path(__file__).resolve().parents[2]


def test_build_of_another_copy_ignores_the_configured_masks(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")   # masks_dir -> data/bench_fixture/... (absent here)
    runner = CliRunner()
    result = runner.invoke(app, ["bench", "build", "--bench", "gedit"])
    assert result.exit_code == 2 and "GEdit-Bench not found at data/bench_fixture/gedit" in result.output, result.output
    result = runner.invoke(app, ["bench", "make-fixture", "--out", "release", "--n", "2"])
    assert result.exit_code == 0, result.output
    shutil.rmtree(tmp_path / "release" / "gedit" / "reference_masks")   # a real release has no known masks
    result = runner.invoke(app, ["bench", "build", "--bench", "gedit", "--path", "release/gedit"])
    assert result.exit_code == 0, result.output
    assert "gt" not in json.loads((tmp_path / "metrics" / "bench_gedit.json").read_text())["mask_source"]


def test_configured_copy_keeps_its_masks(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    runner = CliRunner()
    assert runner.invoke(app, ["bench", "make-fixture", "--out", "data/bench_fixture", "--n", "2"]).exit_code == 0
    for args in (["--bench", "gedit"], ["--bench", "gedit", "--path", "data/bench_fixture/gedit"]):
        result = runner.invoke(app, ["bench", "build", *args])
        assert result.exit_code == 0, result.output
        assert json.loads((tmp_path / "metrics" / "bench_gedit.json").read_text())["mask_source"].get("gt", 0) >= 1
