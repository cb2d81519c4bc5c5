"""Checkpoint discovery and RNG state round trips."""
from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from train.checkpoint import resolve_resume, rng_state, set_rng_state


def test_resume_auto_picks_newest_complete(tmp_path):
    assert resolve_resume("auto", tmp_path) is None and resolve_resume(None, tmp_path) is None
    for name, complete in [("step-000002", True), ("step-000010", True), ("step-000011", False),
                           ("step-000012.tmp-abcd1234", True)]:
        (tmp_path / name).mkdir()
        if complete:
            (tmp_path / name / "COMPLETE").write_text("{}")
    assert resolve_resume("auto", tmp_path).name == "step-000010"  # half-written and temp dirs are ignored
    assert resolve_resume(str(tmp_path / "step-000002"), tmp_path).name == "step-000002"
    with pytest.raises(FileNotFoundError, match="COMPLETE"):
        resolve_resume(str(tmp_path / "step-000011"), tmp_path)


def test_rng_state_round_trip():
    state = rng_state()
    first = (random.random(), np.random.rand(), torch.rand(1).item())
    set_rng_state(state)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == first
