"""Hostile checkpoints: every part that cannot be loaded is one CheckpointError (a UserError), one line naming the
file and the newest valid checkpoint; every entry point prints it as ``error: ...`` and exits with code 2.

Each corruption keeps the COMPLETE manifest consistent (sizes and hashes recomputed), so it is the loading, not the
checksum, that must catch it.
"""
from __future__ import annotations

import json
import pickle
import struct
from pathlib import Path

import pytest
import torch

from editkit.errors import CheckpointError, MissingCheckpoint, UserError
from tests.support.linear_adapter import linear_training
from train import checkpoint
from train.checkpoint import load_checkpoint, load_state, resolve_resume, save_checkpoint, save_state

LORA = "lora/pytorch_lora_weights.safetensors"


def _training(seed=0):
    return linear_training(seed)


def _save(root: Path, step: int) -> Path:
    accelerator, adapter, optimizer, scheduler = _training()
    adapter.model(torch.randn(2, 4)).sum().backward()
    optimizer.step()
    scheduler.step()
    trainer = {"step": step, "sampler": {"epoch": 0, "offset": step}, "algorithm": "grpo"}
    return save_checkpoint(accelerator, adapter, optimizer, scheduler, trainer, root, step, 0)


def _reseal(path: Path) -> None:
    """Rewrite COMPLETE so every file's size and hash match again: the corruption passes the checksums."""
    marker = json.loads((path / "COMPLETE").read_text())
    marker["files"] = {k: v for k, v in checkpoint._manifest(path).items() if k != "COMPLETE"}
    (path / "COMPLETE").write_text(json.dumps(marker))


class _Exploit:
    def __reduce__(self):
        return (Path.touch, (Path(__file__).parent / "PWNED-checkpoint-never-created",))


def _pickle_in_lora(path: Path) -> None:
    (path / LORA).write_bytes(pickle.dumps({"weight": torch.zeros(3, 4), "bias": _Exploit()}))


def _lying_header(path: Path) -> None:
    data = (path / LORA).read_bytes()
    (length,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + length])
    header["weight"]["shape"] = [3, 40]  # ten times the bytes its offsets hold
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    (path / LORA).write_bytes(struct.pack("<Q", len(text)) + text + data[8 + length :])


def _wrong_rng_size(path: Path) -> None:
    rng = load_state(path, "rng")
    rng[0]["torch"] = rng[0]["torch"][:100].clone()
    save_state(rng, path, "rng")


def _garbage_state_json(path: Path) -> None:
    (path / "state.json").write_bytes(b"\x00\xffnot json {")


def _wrong_structure_state_json(path: Path) -> None:
    (path / "state.json").write_text(json.dumps({"__dict__": [["optimizer", {"__tensor__": "99"}]]}))


def _structure_without_step(path: Path) -> None:
    (path / "state.json").write_text(json.dumps([1, 2, 3]))


def _wrong_lora_shapes(path: Path) -> None:
    from safetensors.torch import save_file

    save_file({"weight": torch.zeros(5, 4), "bias": torch.zeros(5)}, str(path / LORA))


CORRUPTIONS = {
    "pickle_in_lora": (_pickle_in_lora, LORA),
    "lying_safetensors_header": (_lying_header, LORA),
    "wrong_rng_state_size": (_wrong_rng_size, "rng.json"),
    "garbage_state_json": (_garbage_state_json, "state.json"),
    "wrong_structure_state_json": (_wrong_structure_state_json, "state.json"),
    "state_json_not_a_dict": (_structure_without_step, "state.json"),
    "wrong_lora_shapes": (_wrong_lora_shapes, LORA),
}


@pytest.fixture
def checkpoints(tmp_path):
    good = _save(tmp_path, 2)
    newest = _save(tmp_path, 4)
    return good, newest


@pytest.mark.parametrize("name", sorted(CORRUPTIONS))
def test_each_corruption_is_one_checkpoint_error_naming_the_file_and_the_newest_valid(checkpoints, name):
    good, newest = checkpoints
    corrupt, file = CORRUPTIONS[name]
    corrupt(newest)
    _reseal(newest)
    assert checkpoint.checkpoint_problem(newest) is None  # the manifest is consistent: loading must catch it
    accelerator, adapter, optimizer, scheduler = _training(seed=7)
    before = adapter.model.weight.detach().clone()
    with pytest.raises(CheckpointError) as caught:
        load_checkpoint(accelerator, adapter, optimizer, scheduler, newest)
    assert isinstance(caught.value, UserError)
    message = str(caught.value)
    assert "\n" not in message and len(message) < 800, message
    assert str(newest) in message and file in message and f"--resume {good}" in message, message
    if file != LORA or name == "lying_safetensors_header" or name == "pickle_in_lora":
        assert torch.equal(adapter.model.weight, before)  # refused before anything was loaded
    assert not (Path(__file__).parent / "PWNED-checkpoint-never-created").exists()


def test_a_missing_checkpoint_is_a_checkpoint_error_too(checkpoints, tmp_path):
    good, newest = checkpoints
    with pytest.raises(MissingCheckpoint) as caught:
        resolve_resume(str(tmp_path / "step-000009"), tmp_path)
    assert isinstance(caught.value, CheckpointError) and isinstance(caught.value, FileNotFoundError)
    assert f"--resume {newest}" in str(caught.value)


def test_a_manifest_with_a_bad_shape_or_a_path_outside_is_refused(checkpoints):
    good, newest = checkpoints
    marker = json.loads((newest / "COMPLETE").read_text())
    (newest / "COMPLETE").write_text(json.dumps({**marker, "files": [1, 2]}))
    with pytest.raises(CheckpointError, match="COMPLETE marker is damaged"):
        load_checkpoint(*_training(), newest)
    (newest / "COMPLETE").write_text(json.dumps({**marker, "files": {"../step-000002/state.json": [1, "x"]}}))
    with pytest.raises(CheckpointError, match="outside the checkpoint"):
        load_checkpoint(*_training(), newest)


def _corrupt_and_fake_run(monkeypatch, newest):
    """Make the entry points' ``run`` resume the corrupted checkpoint (a real trainer is too slow for this)."""
    import train.main

    _pickle_in_lora(newest)
    _reseal(newest)

    def run(config, overrides, resume):
        load_checkpoint(*_training(), Path(resume))

    monkeypatch.setattr(train.main, "run", run)


def test_editkit_train_run_prints_one_line_and_exits_2(checkpoints, monkeypatch):
    from typer.testing import CliRunner

    from train.cli import app

    good, newest = checkpoints
    _corrupt_and_fake_run(monkeypatch, newest)
    result = CliRunner().invoke(app, ["run", "--resume", str(newest)])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"error: checkpoint {newest} cannot be resumed: {LORA}")
    assert f"--resume {good}" in lines[0] and "Traceback" not in result.output


def test_python_m_train_prints_the_same_line_and_exits_2(checkpoints, monkeypatch, capsys):
    import train.main

    good, newest = checkpoints
    _corrupt_and_fake_run(monkeypatch, newest)
    with pytest.raises(SystemExit) as exit_info:
        train.main.main(["--resume", str(newest)])
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and "\n" not in err
    assert err.startswith(f"error: checkpoint {newest} cannot be resumed: {LORA}") and f"--resume {good}" in err
