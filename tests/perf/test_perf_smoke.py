"""Every script in perf/ still runs: each one's ``--smoke`` mode (tiny sizes) must finish and write its JSON.

All scripts run in ONE subprocess (``python -m perf.smoke``), so torch, diffusers and Ray are imported once; each
script is then one parametrized test reading that run's report. Scripts whose smoke path is run by another test
are listed in ``perf.smoke.ELSEWHERE``; a new script in perf/ is picked up automatically and must have --smoke.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from perf import smoke  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> dict:
    work = tmp_path_factory.mktemp("perf-smoke")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(":")}
    done = subprocess.run([sys.executable, "-m", "perf.smoke", "--out-dir", str(work / "out"),
                           "--report", str(work / "report.json")], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)
    if not (work / "report.json").exists():
        pytest.fail(f"perf.smoke wrote no report (exit {done.returncode}):\n{done.stderr[-4000:]}")
    return json.loads((work / "report.json").read_text())


@pytest.mark.parametrize("name", smoke.smoke_scripts())
def test_smoke(report, name):
    row = report[name]
    assert row["ok"], f"perf/{name} --smoke failed:\n{row['error']}"
    result = json.loads(Path(row["json"]).read_text())
    assert isinstance(result, dict) and result
    if "provenance" in result:  # scripts on perf.harness: a smoke run says so, so it is never taken as a measurement
        assert result["provenance"]["smoke"] is True
        assert result["provenance"]["hardware"] and result["provenance"]["commit"]


def test_every_script_has_a_smoke_mode():
    for name in smoke.scripts():
        text = (ROOT / "perf" / name).read_text()
        assert "--smoke" in text or "add_options(" in text or "harness.parse(" in text, f"perf/{name} has no --smoke mode"
        if name in smoke.ELSEWHERE:
            test = ROOT / smoke.ELSEWHERE[name]
            assert test.exists() and "main(" in test.read_text(), f"{test} does not run perf/{name}"
