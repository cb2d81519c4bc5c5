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


# ----------------------------------------------------------------------------------------------- safe format
import copy
import json
import pickle
import shutil
from pathlib import Path

from tests.support.linear_adapter import linear_training
from train import checkpoint
from train.checkpoint import CheckpointError, load_checkpoint, save_checkpoint


def _training(seed=0):
    return linear_training(seed, lambda s: min(1.0, (s + 1) / 3))  # a warm-up: the scheduler's state matters


def _steps(adapter, optimizer, scheduler, n):
    for _ in range(n):
        adapter.model(torch.randn(2, 4)).square().sum().backward()
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad()


TRAINER = {"step": 3, "sampler": {"epoch": 1, "offset": 2}, "advantage_stats": {"mean": 0.5},
           "skipped_rows": {6: "cannot read"}, "algorithm": "grpo"}


def _save(root, step, seed=0):
    accelerator, adapter, optimizer, scheduler = _training(seed)
    _steps(adapter, optimizer, scheduler, step)
    return save_checkpoint(accelerator, adapter, optimizer, scheduler, {**TRAINER, "step": step}, root, step, 0)


def test_checkpoint_round_trip_without_pickle(tmp_path, monkeypatch):
    accelerator, adapter, optimizer, scheduler = _training()
    _steps(adapter, optimizer, scheduler, 3)
    path = save_checkpoint(accelerator, adapter, optimizer, scheduler, TRAINER, tmp_path, 3, keep_last=2)
    assert not list(path.rglob("*.pt")) and (path / "state.safetensors").is_file()
    random.seed(5), np.random.seed(5), torch.manual_seed(5)
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    random.seed(5), np.random.seed(5), torch.manual_seed(5)
    checkpoint.set_rng_state(checkpoint.rng_state())
    save_checkpoint(accelerator, adapter, optimizer, scheduler, TRAINER, tmp_path, 4, keep_last=2)
    weights, moments = adapter.model.weight.detach().clone(), copy.deepcopy(optimizer.state_dict())
    schedule = copy.deepcopy(scheduler.state_dict())
    _steps(adapter, optimizer, scheduler, 2)  # move everything away from the saved state
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("torch.load (pickle) must not be used"))
    fresh_acc, fresh, fresh_opt, fresh_sched = _training(seed=1)
    state = load_checkpoint(fresh_acc, fresh, fresh_opt, fresh_sched, tmp_path / "step-000004")
    assert state == TRAINER and list(state["skipped_rows"]) == [6]  # int keys stay ints
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected
    assert torch.equal(fresh.model.weight, weights) and fresh_sched.state_dict() == schedule
    assert fresh_sched.last_epoch == 3 and fresh_opt.state_dict()["param_groups"] == moments["param_groups"]
    for key, value in moments["state"].items():
        for name, tensor in value.items():
            assert torch.equal(fresh_opt.state_dict()["state"][key][name], tensor), (key, name)


def test_every_file_truncated_in_turn_names_the_newest_valid_checkpoint(tmp_path):
    good = _save(tmp_path, 2)
    newest = _save(tmp_path, 4)
    files = sorted(p.relative_to(newest) for p in newest.rglob("*") if p.is_file())
    assert {str(f) for f in files} >= {"COMPLETE", "state.json", "state.safetensors", "rng.json", "rng.safetensors",
                                       "lora/pytorch_lora_weights.safetensors"}
    pristine = tmp_path / "pristine"
    shutil.copytree(newest, pristine)
    for name in files:
        shutil.rmtree(newest)
        shutil.copytree(pristine, newest)
        data = (newest / name).read_bytes()
        (newest / name).write_bytes(data[: len(data) // 2])
        with pytest.raises(CheckpointError) as caught:
            load_checkpoint(*_training(), newest)
        message = str(caught.value)
        assert str(newest) in message and f"--resume {good}" in message, (name, message)
        assert "\n" not in message
    (newest / "state.json").unlink()
    shutil.rmtree(good)
    with pytest.raises(CheckpointError, match="state.json is missing.*start over"):
        load_checkpoint(*_training(), newest)


class _Exploit:
    def __reduce__(self):
        return (Path.touch, (Path(__file__).parent / "PWNED-never-created",))


def test_an_old_pickle_checkpoint_is_refused_unread(tmp_path):
    bad = tmp_path / "step-000001"
    (bad / "lora").mkdir(parents=True)
    (bad / "state.pt").write_bytes(pickle.dumps({"optimizer": _Exploit()}))
    (bad / "rng.pt").write_bytes(pickle.dumps([_Exploit()]))
    (bad / "COMPLETE").write_text(json.dumps({"step": 1, "processes": 1}))
    marker = Path(__file__).parent / "PWNED-never-created"
    with pytest.raises(CheckpointError, match="older version as pickles"):
        load_checkpoint(*_training(), bad)
    assert not marker.exists()


def test_the_cli_turns_a_bad_checkpoint_into_one_line_and_exit_code_2(monkeypatch, capsys):
    import train.main

    def run(*args):
        raise CheckpointError("checkpoint x cannot be resumed: y; start over in a new output_dir")

    monkeypatch.setattr(train.main, "run", run)
    with pytest.raises(SystemExit) as exit_info:
        train.main.main(["--resume", "x"])
    assert exit_info.value.code == 2 and capsys.readouterr().err.strip().startswith("error: checkpoint x")
