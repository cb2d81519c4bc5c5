"""`editkit rrm demo --quick` end to end (tiny sizes), the synthetic task's labels, and the CLI's user errors."""
from __future__ import annotations

import json

import numpy as np
from typer.testing import CliRunner

from editkit.cli import app
from train.rrm.demo import candidate, ground_truth, make_task, source_image, DemoSizes


def test_winner_is_the_edit_closer_to_the_ground_truth(tmp_path):
    rng = np.random.default_rng(0)
    source = source_image(rng)
    truth = ground_truth(source)
    assert ((candidate(source, 1.0, 0.0, rng) - truth) ** 2).max() == 0
    weak, noisy = candidate(source, 0.2, 0.0, rng), candidate(source, 1.0, 0.2, rng)
    assert ((weak - truth) ** 2).mean() > 0 and ((noisy - truth) ** 2).mean() > 0
    task = make_task(tmp_path, DemoSizes(sft_records=2, train_pairs=3, heldout_pairs=20), seed=0)
    rows = [json.loads(l) for l in task["heldout"].read_text().splitlines()]
    assert len(rows) == 20 and {r["winner"] for r in rows} == {"A", "B"}
    assert 0.5 < task["teacher_accuracy"] < 1.0  # the teacher's blind spot: right often, not always


def test_quick_demo_writes_the_table(tmp_path):
    result = CliRunner().invoke(app, ["rrm", "demo", "--quick", "--seeds", "1", "--out", str(tmp_path / "run"),
                                      "--results", str(tmp_path / "results")])
    assert result.exit_code == 0, result.output
    data = json.loads((tmp_path / "results" / "table.json").read_text())
    for stage in ("before_sft", "after_sft", "after_gcpo"):
        assert 0 <= data["summary"][stage]["mean"] <= 1
    assert data["runs"][0]["before_sft"]["valid_fraction"] == 0.0  # a random model writes no valid judgement
    assert "after SFT + GCPO" in (tmp_path / "results" / "table.md").read_text()


def test_user_errors_exit_2_with_one_line(tmp_path):
    runner = CliRunner()
    result = runner.invoke(app, ["rrm", "sft", "--config", str(tmp_path / "missing.yaml")])
    assert result.exit_code == 2 and "config file" in result.output
    result = runner.invoke(app, ["rrm", "gcpo", "optim.nosuch=1"])
    assert result.exit_code == 2 and "unknown key" in result.output
