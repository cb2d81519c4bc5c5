"""`editkit bench make-fixture | build | evaluate` through the real CLI (typer), in a scratch working directory."""
import json

from typer.testing import CliRunner

from editkit.cli import app


def test_cli_fixture_build_evaluate_compare(tmp_path, tiny_kontext, tiny_lora, monkeypatch):
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    result = runner.invoke(app, ["bench", "make-fixture", "--out", "fx", "--n", "3"])
    assert result.exit_code == 0, result.output
    masks = "fx/imgedit/reference_masks"
    result = runner.invoke(app, ["bench", "build", "--bench", "imgedit", "--path", "fx/imgedit", "--masks", masks])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "metrics" / "bench_imgedit.json").read_text())["mask_source"] == {"gt": 3}
    common = ["bench", "evaluate", "--bench", "imgedit", "--model", str(tiny_kontext), "--steps", "1",
              "--resolution", "32", "--device", "cpu"]
    result = runner.invoke(app, common + ["--out", "runs/base"])
    assert result.exit_code == 0, result.output
    assert "| remove | 1 |" in result.output and "| all | 3 |" in result.output
    result = runner.invoke(app, common + ["--lora", str(tiny_lora), "--out", "runs/lora", "--baseline", "runs/base"])
    assert result.exit_code == 0, result.output
    assert "lora vs baseline base" in result.output and (tmp_path / "runs/lora/compare.md").is_file()
    (tmp_path / "runs/lora/compare.md").unlink()
    result = runner.invoke(app, ["bench", "compare", "runs/lora", "runs/base"])
    assert result.exit_code == 0 and "lora vs baseline base" in result.output
    assert (tmp_path / "runs/lora/compare.md").is_file()
    result = runner.invoke(app, ["bench", "compare", "runs/lora", "runs/missing"])
    assert result.exit_code == 2 and "no report at runs/missing" in result.output
    result = runner.invoke(app, ["bench", "build", "--bench", "gedit", "--path", "nowhere"])
    assert result.exit_code == 2 and "GEdit-Bench not found at nowhere" in result.output
    result = runner.invoke(app, ["bench", "build", "--bench", "nope"])
    assert result.exit_code != 0 and "unknown benchmark" in result.output
