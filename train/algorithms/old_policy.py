"""The lagged sampling policy of DiffusionNFT as CoCoEdit runs it: a copy of the LoRA weights that trails the trained
ones, ``θ_old ← d·θ_old + (1 − d)·θ`` after each iteration with ``d = min(rate·step, max)``.

Rollouts and the ``v_old`` targets use ``θ_old`` (swapped into the model for the duration); the gradient step uses θ.
With ``rate = max = 0`` it is the current weights and nothing is copied.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch


class LaggedPolicy:
    def __init__(self, parameters: list[torch.nn.Parameter], rate: float, maximum: float):
        self.parameters = list(parameters)
        self.rate, self.maximum = float(rate), float(maximum)
        self.enabled = self.rate > 0 and self.maximum > 0
        self.values = [p.detach().clone() for p in self.parameters] if self.enabled else []

    def decay(self, step: int) -> float:
        return min(self.rate * step, self.maximum)

    @torch.no_grad()
    def update(self, step: int) -> None:
        """After iteration ``step``'s update: blend the trained weights into the lagged copy."""
        if not self.enabled:
            return
        d = self.decay(step)
        for old, current in zip(self.values, self.parameters):
            old.mul_(d).add_(current.detach(), alpha=1.0 - d)

    @contextmanager
    def active(self) -> Iterator[None]:
        """The model runs with θ_old inside the block; θ is restored afterwards (also on errors)."""
        if not self.enabled:
            yield
            return
        saved = [p.detach().clone() for p in self.parameters]
        with torch.no_grad():
            for p, old in zip(self.parameters, self.values):
                p.copy_(old)
        try:
            yield
        finally:
            with torch.no_grad():
                for p, value in zip(self.parameters, saved):
                    p.copy_(value)

    def state(self) -> list[torch.Tensor]:
        """Full tensors (gathered when the parameters are FSDP2 shards: collective), so any parallelism resumes it."""
        from train.parallel import full_tensor

        return [full_tensor(v).cpu().clone() for v in self.values]

    def load(self, values: list[torch.Tensor] | None) -> None:
        if not self.enabled:
            return
        if values is None or len(values) != len(self.values):
            raise ValueError("the checkpoint has no lagged sampling policy for objective.nft.old_decay_* > 0")
        from train.parallel import copy_full_into

        for old, value in zip(self.values, values):
            copy_full_into(old, value)
