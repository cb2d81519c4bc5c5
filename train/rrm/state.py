"""Resumable RRM training state without pickle: safetensors for tensors, JSON for everything else.

``<output_dir>/checkpoints/step-000010/{trainable.safetensors, optimizer.safetensors, state.json, COMPLETE}``:
the trainable parameters (LoRA or all), the optimizer's per-parameter tensors, and in JSON the step, the optimizer's
hyper-parameters, the RNG states (Python, NumPy, torch, CUDA) and the trainer's own state. Written under a temporary
name and renamed in one step (:func:`editkit.store.atomic_dir`), so a killed run leaves a complete checkpoint or none.
"""
from __future__ import annotations

import json
import random
import shutil
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from editkit.store import atomic_dir, write_json
from train.checkpoint import list_checkpoints  # the same step-NNNNNN/COMPLETE layout
from train.rrm.errors import UserError



def rng_state() -> dict:
    version, internal, gauss = random.getstate()
    kind, keys, position, has_gauss, cached = np.random.get_state()
    state = {"python": [version, list(internal), gauss], "numpy": [kind, keys.tolist(), position, has_gauss, cached],
             "torch": torch.get_rng_state().tolist()}
    if torch.cuda.is_available():
        state["cuda"] = [s.tolist() for s in torch.cuda.get_rng_state_all()]
    return state


def set_rng_state(state: dict) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, position, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), position, has_gauss, cached))
    torch.set_rng_state(torch.tensor(state["torch"], dtype=torch.uint8))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([torch.tensor(s, dtype=torch.uint8) for s in state["cuda"]])


def _trainable(model) -> dict[str, torch.nn.Parameter]:
    inner = getattr(model, "module", model)
    return {name: p for name, p in inner.named_parameters() if p.requires_grad}


def _optimizer_split(optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Optimizer state -> (tensors for safetensors, JSON-able rest)."""
    state = optimizer.state_dict()
    tensors, scalars = {}, {}
    for index, values in state["state"].items():
        for key, value in values.items():
            if torch.is_tensor(value):
                tensors[f"{index}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"{index}.{key}"] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _optimizer_join(tensors: dict[str, torch.Tensor], rest: dict[str, Any]) -> dict:
    state: dict[int, dict] = {}
    for name, value in list(tensors.items()) + list(rest["scalars"].items()):
        index, key = name.split(".", 1)
        state.setdefault(int(index), {})[key] = value
    return {"state": state, "param_groups": rest["param_groups"]}


def save_state(root: Path, step: int, model, optimizer, trainer: dict, rng: list[dict], keep_last: int = 2) -> Path:
    """Write checkpoint ``step`` (main process only; ``rng`` holds every process's RNG state)."""
    from safetensors.torch import save_file

    final = Path(root) / f"step-{step:06d}"
    with atomic_dir(final) as tmp:
        save_file({n: p.detach().cpu().contiguous() for n, p in _trainable(model).items()},
                  str(tmp / "trainable.safetensors"))
        tensors, rest = _optimizer_split(optimizer)
        save_file(tensors, str(tmp / "optimizer.safetensors"))
        write_json(tmp / "state.json", {"step": step, "optimizer": rest, "rng": rng, "trainer": trainer})
        write_json(tmp / "COMPLETE", {"step": step, "processes": len(rng)})
    if keep_last > 0:
        for _, old in list_checkpoints(root)[:-keep_last]:
            shutil.rmtree(old, ignore_errors=True)
    return final


def load_state(path: Path, model, optimizer, process_index: int = 0, algorithm: Optional[str] = None
               ) -> tuple[int, dict]:
    """Restore parameters, optimizer and this process's RNG; returns (step, trainer state)."""
    from safetensors.torch import load_file

    path = Path(path)
    state = json.loads((path / "state.json").read_text())
    written_by = state["trainer"].get("algorithm")
    if algorithm is not None and written_by != algorithm:
        raise UserError(f"checkpoint {path} was written by {written_by!r}, this run is {algorithm!r}")
    saved = load_file(str(path / "trainable.safetensors"))
    params = _trainable(model)
    if set(saved) != set(params):
        missing, extra = sorted(set(params) - set(saved))[:3], sorted(set(saved) - set(params))[:3]
        raise UserError(f"checkpoint {path} does not match the model's trainable parameters "
                         f"(missing {missing}, unexpected {extra}): same lora settings?")
    with torch.no_grad():
        for name, parameter in params.items():
            parameter.copy_(saved[name])
    optimizer.load_state_dict(_optimizer_join(load_file(str(path / "optimizer.safetensors")), state["optimizer"]))
    rng = state["rng"]
    set_rng_state(rng[process_index % len(rng)])
    return int(state["step"]), state["trainer"]


def resolve_resume(resume: Optional[str], root: Path) -> Optional[Path]:
    """None/"none" -> fresh; "auto" -> newest complete checkpoint (or fresh); else that checkpoint directory."""
    if not resume or resume == "none":
        if list_checkpoints(root):
            raise UserError(f"{root} holds checkpoints of an earlier run: pass --resume auto to continue it, or "
                             "use a new output_dir")
        return None
    if resume == "auto":
        found = list_checkpoints(root)
        return found[-1][1] if found else None
    path = Path(resume)
    if not (path / "COMPLETE").exists():
        raise UserError(f"{path} is not a complete checkpoint (no COMPLETE marker)")
    return path
