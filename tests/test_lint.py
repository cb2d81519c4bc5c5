"""Lint: `ruff check` over the packages and the tests passes (rules and exceptions in pyproject.toml, [tool.ruff])."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PATHS = ("editkit", "curate", "annotate", "benchmarks", "train", "tests")


def _ruff() -> list[str] | None:
    beside = Path(sys.executable).with_name("ruff")
    if beside.is_file():
        return [str(beside)]
    found = shutil.which("ruff")
    return [found] if found else None


def test_ruff_check_passes():
    ruff = _ruff()
    if ruff is None:  # the test extra installs ruff; in CI its absence is a failure
        (pytest.fail if os.environ.get("CI") else pytest.skip)("ruff is not installed (pip install -e '.[test]')")
    run = subprocess.run([*ruff, "check", "--no-cache", "--output-format", "concise", *PATHS], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, f"ruff check found problems:\n{run.stdout[-6000:]}{run.stderr[-2000:]}"
