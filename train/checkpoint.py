"""Resumable checkpoints: LoRA, optimizer, LR scheduler, per-process RNG states, sampler position, trainer state.

Layout: ``<output_dir>/checkpoints/step-000010/{lora/, state.json, state.safetensors, rng.json, rng.safetensors,
COMPLETE}``. Nothing is pickled: tensors go to safetensors, everything else (numbers, strings, lists, tuples,
dicts, numpy arrays as lists) to JSON with a tag for each non-JSON type, so ``--resume`` on a directory someone
else wrote cannot run code. The main process writes the whole directory under a temporary name and renames it in
one step (:func:`editkit.store.atomic_dir`), so a run killed at any moment leaves either a complete checkpoint or
none; ``COMPLETE`` is written last and lists every file's size and SHA-256.

A checkpoint that fails those checks (a truncated or damaged file, a missing marker, the old pickle format) is not
resumed, and not silently replaced by an older one either (that would redo steps the user believes done): the
error names the directory, what is wrong and the newest valid checkpoint to pass to ``--resume`` instead.
``--resume auto`` picks the newest complete one.
"""
from __future__ import annotations

import hashlib
import json
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from editkit.store import atomic_dir, write_json

_STEP_DIR = re.compile(r"^step-(\d{6,})$")


class CheckpointError(ValueError):
    """A checkpoint that cannot be resumed; the message says which, why, and what to resume from instead."""


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
        raise FileNotFoundError(_unusable(path, "not a complete checkpoint (no COMPLETE marker)"))
    return path


def save_checkpoint(accelerator, adapter, optimizer, lr_scheduler, trainer_state: dict, root: Path, step: int,
                    keep_last: int) -> Path | None:
    """Collective: every process calls it (RNG states are gathered); the main process writes."""
    from accelerate.utils import gather_object

    from train.parallel import full_lora_state, full_optimizer_state

    states = gather_object([rng_state()])
    # full tensors by parameter name under DDP and FSDP2 alike (gathered from the shards): either resumes either
    lora, optimizer_state = full_lora_state(adapter.transformer), full_optimizer_state(adapter.transformer, optimizer)
    final = Path(root) / f"step-{step:06d}"
    if accelerator.is_main_process:
        with atomic_dir(final) as tmp:
            adapter.save_lora(tmp / "lora", lora)
            save_state({"optimizer": optimizer_state, "lr_scheduler": lr_scheduler.state_dict(),
                        "trainer": trainer_state}, tmp, "state")
            save_state(states, tmp, "rng")
            write_json(tmp / "COMPLETE", {"step": step, "processes": accelerator.num_processes, "files": _manifest(tmp)})
        for _, old in list_checkpoints(root)[:-keep_last] if keep_last > 0 else []:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def load_checkpoint(accelerator, adapter, optimizer, lr_scheduler, path: Path) -> dict:
    """Restore everything; returns the trainer state saved with it. Raises :class:`CheckpointError` when the
    checkpoint is damaged, naming the newest valid one in the same folder."""
    from train.parallel import load_lora_files, load_optimizer_state

    path = Path(path)
    problem = checkpoint_problem(path)
    if problem is None:
        try:
            state, rng = load_state(path, "state"), load_state(path, "rng")
        except Exception as error:  # safetensors/JSON/structure errors of a file that passed the checksums
            problem = f"cannot read its state ({type(error).__name__}: {error})"
    if problem is not None:
        raise CheckpointError(_unusable(path, problem))
    load_lora_files(adapter, path / "lora")
    load_optimizer_state(adapter.transformer, optimizer, state["optimizer"])
    lr_scheduler.load_state_dict(state["lr_scheduler"])
    if len(rng) != accelerator.num_processes:
        accelerator.print(f"warning: checkpoint has RNG states of {len(rng)} processes, running {accelerator.num_processes}")
    set_rng_state(rng[accelerator.process_index % len(rng)])
    return state["trainer"]


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
    for name, (size, digest) in sorted(files.items()):
        file = path / name
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
