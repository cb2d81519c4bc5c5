"""perf/peer_step.py's ``--peer PATH``: a path without flow_grpo's Kontext trainer stops with one clear line, and only
modules that are not installed get stubbed. (Its smoke run, ours only, is in test_perf_smoke.py.)"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from perf import peer_step  # noqa: E402


def test_a_path_without_the_kontext_trainer_is_refused_in_one_line(tmp_path):
    (tmp_path / "scripts").mkdir()
    (tmp_path / "scripts" / "train_flux_kontext.py").write_text("")
    with pytest.raises(peer_step.PeerError) as error:
        peer_step.check_peer(tmp_path)
    message = str(error.value)
    assert "\n" not in message
    assert "flux_kontext_pipeline_with_logprob.py" in message and "sd3_sde_with_logprob.py" in message
    assert "scripts/train_flux_kontext.py" not in message  # present: not reported missing


def test_a_missing_directory_is_refused(tmp_path):
    with pytest.raises(peer_step.PeerError, match="is not a directory"):
        peer_step.check_peer(tmp_path / "nowhere")


def test_a_complete_clone_passes_the_check(tmp_path):
    for name in peer_step.PEER_FILES:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("")
    assert peer_step.check_peer(tmp_path) == tmp_path.resolve()


def test_only_modules_that_are_not_installed_are_stubbed():
    absent = "editkit_peer_step_absent_module"
    try:
        assert peer_step.stub_missing(["json", absent]) == [absent]
        assert sys.modules["json"].__name__ == "json" and hasattr(sys.modules["json"], "dumps")  # untouched
        assert sys.modules[absent].__spec__ is not None  # library availability checks (find_spec) keep working
    finally:
        sys.modules.pop(absent, None)
