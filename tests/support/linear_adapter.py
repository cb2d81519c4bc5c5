"""A tiny stand-in for a model adapter in the checkpoint tests: the adapter's save/load contract (a LoRA file in a
folder) on one linear layer, and its training objects (accelerator, optimizer, LR scheduler)."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch


class LinearAdapter:
    """A model with the adapter's save/load contract (a LoRA file in a folder), small enough to checkpoint often."""

    def __init__(self, seed: int = 0):
        torch.manual_seed(seed)
        self.model = self.transformer = torch.nn.Linear(4, 3)  # every parameter trainable, as a LoRA's

    def save_lora(self, directory: Path, state: dict | None = None) -> None:
        from safetensors.torch import save_file

        directory.mkdir()
        state = self.model.state_dict() if state is None else state  # the trainer passes the gathered state
        save_file({k: v.contiguous() for k, v in state.items()}, str(directory / "pytorch_lora_weights.safetensors"))

    def load_lora(self, directory: Path) -> None:
        from safetensors.torch import load_file

        self.model.load_state_dict(load_file(str(directory / "pytorch_lora_weights.safetensors")))


def linear_training(seed: int = 0, lr_lambda: Callable[[int], float] = lambda step: 1.0):
    """(CPU accelerator, :class:`LinearAdapter`, AdamW at lr 1e-2, LambdaLR with ``lr_lambda``)."""
    from accelerate import Accelerator

    adapter = LinearAdapter(seed)
    optimizer = torch.optim.AdamW(adapter.model.parameters(), lr=1e-2)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda)
    return Accelerator(cpu=True), adapter, optimizer, scheduler
