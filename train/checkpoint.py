"""Resumable checkpoints: LoRA, optimizer, LR scheduler, per-process RNG states, sampler position, trainer state.

Layout: ``<output_dir>/checkpoints/step-000010/{lora/, state.pt, rng.pt, COMPLETE}``. The main process writes the
whole directory under a temporary name and renames it in one step (:func:`editkit.store.atomic_dir`), so a run
killed at any moment leaves either a complete checkpoint or none; ``COMPLETE`` is a second guard.
``--resume auto`` picks the newest complete one.
"""
from __future__ import annotations

import random
import re
import shutil
from pathlib import Path

import numpy as np
import torch

from editkit.store import atomic_dir, write_json

_STEP_DIR = re.compile(r"^step-(\d{6,})$")


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
        raise FileNotFoundError(f"{path} is not a complete checkpoint (no COMPLETE marker)")
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
            torch.save({"optimizer": optimizer_state, "lr_scheduler": lr_scheduler.state_dict(),
                        "trainer": trainer_state}, tmp / "state.pt")
            torch.save(states, tmp / "rng.pt")
            write_json(tmp / "COMPLETE", {"step": step, "processes": accelerator.num_processes})
        for _, old in list_checkpoints(root)[:-keep_last] if keep_last > 0 else []:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def load_checkpoint(accelerator, adapter, optimizer, lr_scheduler, path: Path) -> dict:
    """Restore everything; returns the trainer state saved with it."""
    from train.parallel import load_lora_files, load_optimizer_state

    load_lora_files(adapter, path / "lora")
    state = torch.load(path / "state.pt", weights_only=False, map_location="cpu")
    load_optimizer_state(adapter.transformer, optimizer, state["optimizer"])
    lr_scheduler.load_state_dict(state["lr_scheduler"])
    rng = torch.load(path / "rng.pt", weights_only=False)
    if len(rng) != accelerator.num_processes:
        accelerator.print(f"warning: checkpoint has RNG states of {len(rng)} processes, running {accelerator.num_processes}")
    set_rng_state(rng[accelerator.process_index % len(rng)])
    return state["trainer"]
