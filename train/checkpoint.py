"""Resumable checkpoints of every trainer (GRPO, NFT, the reward model's SFT and GCPO): the trained weights,
optimizer, LR scheduler, per-process RNG states and the trainer's own state (step, data position, ...).

Layout: ``<output_dir>/checkpoints/step-000010/{<weights>, state.json, state.safetensors, rng.json,
rng.safetensors, COMPLETE}``; the weights are a LoRA the model's pipeline loads (``lora/``) for an editing model
(:func:`adapter_weights`) or the trainable parameters of any other module (:class:`TrainedWeights`).
Nothing is pickled: tensors go to safetensors, everything else (numbers, strings, lists, tuples, dicts, numpy
arrays as lists) to JSON with a tag for each non-JSON type, so ``--resume`` on a directory someone else wrote
cannot run code. The main process writes the whole directory under a temporary name and renames it in
one step (:func:`editkit.store.atomic_dir`), so a run killed at any moment leaves either a complete checkpoint or
none; ``COMPLETE`` is written last and lists every file's size and SHA-256.

A checkpoint that fails those checks (a truncated or damaged file, a missing marker, the old pickle format) is not
resumed, and not silently replaced by an older one either (that would redo steps the user believes done): the
error names the directory, what is wrong and the newest valid checkpoint to pass to ``--resume`` instead.
A checkpoint whose files match their recorded hashes but still cannot be loaded (a weights file that is not safetensors
or whose header lies, tensors of the wrong shape, an RNG state of the wrong size, a trainer state of the wrong
structure) gets the same treatment: every failure to load any part is one :class:`CheckpointError` (a
:class:`~editkit.errors.UserError`: one line and exit code 2 from every entry point), naming the file.
``--resume auto`` picks the newest complete one.
"""
from __future__ import annotations

import hashlib
import json
import random
import re
import shutil
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch

from editkit.errors import CheckpointError, MissingCheckpoint
from editkit.store import atomic_dir, write_json

__all__ = ["CheckpointError", "MissingCheckpoint", "TrainedWeights", "adapter_weights", "checkpoint_problem",
           "list_checkpoints", "load_checkpoint", "resolve_resume", "save_checkpoint"]

_STEP_DIR = re.compile(r"^step-(\d{6,})$")


@dataclass
class TrainedWeights:
    """What a checkpoint keeps of the model: the trainable parameters of ``module`` (full tensors by name), written
    by ``save(folder, state)`` to ``file`` (a safetensors file, relative to the checkpoint; ``folder`` is its parent)
    and restored by ``load(folder)`` with exact values."""

    module: torch.nn.Module
    file: str
    save: Callable[[Path, dict[str, torch.Tensor]], None]
    load: Callable[[Path], None]


def adapter_weights(adapter) -> TrainedWeights:
    """An editing model's LoRA, saved the way its pipeline's ``load_lora_weights`` reads it."""
    from train.parallel import load_lora_files

    return TrainedWeights(adapter.transformer, "lora/pytorch_lora_weights.safetensors", adapter.save_lora,
                          lambda folder: load_lora_files(adapter, folder))


def _weights(model) -> TrainedWeights:
    return model if isinstance(model, TrainedWeights) else adapter_weights(model)


def rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ---------------------------------------------------------------------------------- plain state <-> safetensors+JSON
def save_state(obj: Any, directory: Path, name: str) -> None:
    """``obj`` (tensors, numpy arrays, numbers, strings, None, lists, tuples, dicts) -> ``name``.json + .safetensors."""
    from safetensors.torch import save_file

    tensors: dict[str, torch.Tensor] = {}
    (directory / f"{name}.json").write_text(json.dumps(_encode(obj, tensors)))
    save_file(tensors, str(directory / f"{name}.safetensors"))


def load_state(directory: Path, name: str) -> Any:
    from safetensors.torch import load_file

    return _decode(json.loads((directory / f"{name}.json").read_text()), load_file(str(directory / f"{name}.safetensors")))


def _encode(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, torch.Tensor):
        key = str(len(tensors))
        tensors[key] = obj.detach().cpu().contiguous().clone()  # clone: safetensors refuses shared storage
        return {"__tensor__": key}
    if isinstance(obj, np.ndarray):
        return {"__ndarray__": obj.tolist(), "dtype": obj.dtype.str}
    if isinstance(obj, np.generic):
        return _encode(obj.item(), tensors)
    if isinstance(obj, tuple):
        return {"__tuple__": [_encode(v, tensors) for v in obj]}
    if isinstance(obj, list):
        return [_encode(v, tensors) for v in obj]
    if isinstance(obj, dict):  # keys may be ints (optimizer state): keep their type
        return {"__dict__": [[_encode(k, tensors), _encode(v, tensors)] for k, v in obj.items()]}
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"checkpoint state holds a {type(obj).__name__}: only tensors, arrays and plain values are saved")


def _decode(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, list):
        return [_decode(v, tensors) for v in obj]
    if not isinstance(obj, dict):
        return obj
    if "__tensor__" in obj:
        return tensors[obj["__tensor__"]]
    if "__ndarray__" in obj:
        return np.asarray(obj["__ndarray__"], dtype=np.dtype(obj["dtype"]))
    if "__tuple__" in obj:
        return tuple(_decode(v, tensors) for v in obj["__tuple__"])
    if "__dict__" in obj:
        return {_decode(k, tensors): _decode(v, tensors) for k, v in obj["__dict__"]}
    raise ValueError(f"unknown entry {sorted(obj)[:3]} in checkpoint state")


# ---------------------------------------------------------------------------------- discovery and validation
def list_checkpoints(root: Path) -> list[tuple[int, Path]]:
    found = []
    for path in Path(root).glob("step-*"):
        match = _STEP_DIR.match(path.name)
        if match and (path / "COMPLETE").exists():
            found.append((int(match.group(1)), path))
    return sorted(found)


def resolve_resume(resume: str | None, root: Path) -> Path | None:
    """``None``/``"none"`` -> no resume; ``"auto"`` -> newest complete checkpoint (or none); else a path."""
    if not resume or resume == "none":
        return None
    if resume == "auto":
        found = list_checkpoints(root)
        return found[-1][1] if found else None
    path = Path(resume)
    if not (path / "COMPLETE").exists():
        raise MissingCheckpoint(_unusable(path, "not a complete checkpoint (no COMPLETE marker)"))
    return path


def save_checkpoint(accelerator, model, optimizer, lr_scheduler, trainer_state: dict, root: Path, step: int,
                    keep_last: int) -> Path | None:
    """Collective: every process calls it (RNG states are gathered); the main process writes. ``model``: the
    :class:`TrainedWeights`, or an editing-model adapter (its LoRA)."""
    from accelerate.utils import gather_object

    from train.parallel import full_lora_state, full_optimizer_state

    weights = _weights(model)
    states = gather_object([rng_state()])
    # full tensors by parameter name under DDP and FSDP2 alike (gathered from the shards): either resumes either
    trained, optimizer_state = full_lora_state(weights.module), full_optimizer_state(weights.module, optimizer)
    final = Path(root) / f"step-{step:06d}"
    if accelerator.is_main_process:
        with atomic_dir(final) as tmp:
            weights.save((tmp / weights.file).parent, trained)
            save_state({"optimizer": optimizer_state, "lr_scheduler": lr_scheduler.state_dict(),
                        "trainer": trainer_state}, tmp, "state")
            save_state(states, tmp, "rng")
            write_json(tmp / "COMPLETE", {"step": step, "processes": accelerator.num_processes, "files": _manifest(tmp)})
        for _, old in list_checkpoints(root)[:-keep_last] if keep_last > 0 else []:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def load_checkpoint(accelerator, model, optimizer, lr_scheduler, path: Path, algorithm: str | None = None) -> dict:
    """Restore everything; returns the trainer state saved with it. Raises :class:`CheckpointError` when any part
    of the checkpoint cannot be loaded, naming the file and the newest valid checkpoint in the same folder, or when
    it was written by another trainer than ``algorithm`` (if given).

    Everything that can be checked without touching the model is checked first (hashes, the state and RNG
    structure, the weights file's header); a failure while loading into the model is reported the same way."""
    from train.parallel import load_optimizer_state

    path, weights = Path(path), _weights(model)
    problem = checkpoint_problem(path)
    if problem is not None:
        raise CheckpointError(_unusable(path, problem))
    with _loading(path, "state.json"):
        state = load_state(path, "state")
        _check_state(state)
    written_by = state["trainer"].get("algorithm")
    if algorithm is not None and written_by != algorithm:
        raise CheckpointError(f"checkpoint {path} was written by {written_by!r}, this run is {algorithm!r}: resume "
                              "it with the same trainer, or use a new output_dir")
    with _loading(path, "rng.json"):
        rng = load_state(path, "rng")
        if not isinstance(rng, list) or not rng:
            raise ValueError("not a list of per-process RNG states")
        mine = rng[accelerator.process_index % len(rng)]
        _try_rng_state(mine)
    with _loading(path, weights.file):
        _check_safetensors(path / weights.file)
        weights.load((path / weights.file).parent)
    with _loading(path, "state.json (optimizer)"):
        load_optimizer_state(weights.module, optimizer, state["optimizer"])
    with _loading(path, "state.json (lr_scheduler)"):
        lr_scheduler.load_state_dict(state["lr_scheduler"])
    if len(rng) != accelerator.num_processes:
        accelerator.print(f"warning: checkpoint has RNG states of {len(rng)} processes, running {accelerator.num_processes}")
    with _loading(path, "rng.json"):
        set_rng_state(mine)
    return state["trainer"]


@contextmanager
def _loading(path: Path, name: str) -> Iterator[None]:
    """Turn any failure to load ``name`` of checkpoint ``path`` into one :class:`CheckpointError` line."""
    try:
        yield
    except CheckpointError:
        raise
    except (KeyboardInterrupt, SystemExit, MemoryError, torch.OutOfMemoryError):
        raise
    except Exception as error:  # safetensors, JSON, torch, numpy, structure: all the same to the user
        detail = " ".join(str(error).split()) or "no detail"
        detail = detail if len(detail) <= 240 else detail[:240] + "..."
        raise CheckpointError(_unusable(path, f"{name} cannot be loaded ({type(error).__name__}: {detail})")) from error


def _check_state(state: Any) -> None:
    if not isinstance(state, dict) or not {"optimizer", "lr_scheduler", "trainer"} <= set(state):
        raise ValueError("not a dict with optimizer, lr_scheduler and trainer entries")
    trainer = state["trainer"]
    if not isinstance(trainer, dict) or not isinstance(trainer.get("step"), int) or isinstance(trainer["step"], bool):
        raise ValueError("the trainer state has no integer step")
    if not isinstance(state["optimizer"], dict) or not isinstance(state["lr_scheduler"], dict):
        raise ValueError("the optimizer and lr_scheduler states are not dicts")


def _try_rng_state(state: Any) -> None:
    """Apply ``state`` and put the current one back: a state of the wrong size or type fails here, before anything
    else is loaded."""
    if not isinstance(state, dict) or not {"python", "numpy", "torch"} <= set(state):
        raise ValueError("an RNG state without python, numpy and torch entries")
    current = rng_state()
    try:
        set_rng_state(state)
    finally:
        set_rng_state(current)


def _check_safetensors(file: Path) -> None:
    """Read every tensor of a safetensors file (not pickle: never runs code); a header whose offsets, dtypes or
    shapes do not match the data raises here."""
    from safetensors import safe_open

    with safe_open(str(file), framework="pt") as handle:
        for key in handle.keys():
            handle.get_tensor(key)


def checkpoint_problem(path: Path) -> str | None:
    """What makes ``path`` unusable (None: every file is there, with the size and hash recorded in COMPLETE)."""
    path = Path(path)
    if not (path / "COMPLETE").is_file():
        return "no COMPLETE marker (partially written)"
    try:
        files = json.loads((path / "COMPLETE").read_text())["files"]
    except (OSError, ValueError, KeyError, TypeError):
        if (path / "state.pt").exists():
            return "written by an older version as pickles (state.pt), which are not loaded: they could run code"
        return "its COMPLETE marker is damaged"
    try:
        entries = sorted((str(name), int(size), str(digest)) for name, (size, digest) in files.items())
    except (AttributeError, TypeError, ValueError):
        return "its COMPLETE marker is damaged"
    root = path.resolve()
    for name, size, digest in entries:
        file = path / name
        if not file.resolve().is_relative_to(root):
            return f"its COMPLETE marker lists {name}, which is outside the checkpoint"
        if not file.is_file():
            return f"{name} is missing"
        if file.stat().st_size != size:
            return f"{name} is damaged ({file.stat().st_size} bytes, {size} written)"
        if _sha256(file) != digest:
            return f"{name} is damaged (its checksum differs from the one written)"
    return None


def _unusable(path: Path, problem: str) -> str:
    valid = [p for _, p in reversed(list_checkpoints(path.parent))
             if p.resolve() != path.resolve() and checkpoint_problem(p) is None]
    way_out = (f"the newest valid checkpoint is {valid[0]}: pass --resume {valid[0]}" if valid else
               "no other valid checkpoint is there: start over in a new output_dir")
    return f"checkpoint {path} cannot be resumed: {problem}; {way_out}"


def _manifest(directory: Path) -> dict[str, list]:
    return {str(f.relative_to(directory)): [f.stat().st_size, _sha256(f)]
            for f in sorted(directory.rglob("*")) if f.is_file()}


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
