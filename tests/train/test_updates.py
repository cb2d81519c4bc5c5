"""Optimizer updates: gradient accumulation schedule and skipping non-finite gradients."""
from __future__ import annotations

import torch

from train.config import load_config
from train.trainers.base import Trainer


def _bare_trainer(accumulation: int = 0):
    from accelerate import Accelerator

    trainer = object.__new__(type("Bare", (Trainer,), {"sample": None, "optimize": None}))  # no model loading
    trainer.config = load_config(None, [f"optim.gradient_accumulation={accumulation}"])
    from train.parallel import DataParallel

    trainer.accelerator = Accelerator(cpu=True)
    trainer.parallel = DataParallel(trainer.accelerator)
    trainer.model = torch.nn.Linear(3, 1)
    trainer.optimizer = torch.optim.SGD(trainer.model.parameters(), lr=0.1)
    trainer.lr_scheduler = torch.optim.lr_scheduler.LambdaLR(trainer.optimizer, lambda _: 1.0)
    return trainer


def test_update_schedule():
    assert _bare_trainer(0).update_schedule(3) == [(False, 3), (False, 3), (True, 3)]
    assert _bare_trainer(2).update_schedule(5) == [(False, 2), (True, 2), (False, 2), (True, 2), (True, 1)]


def test_nonfinite_gradients_skip_the_update():
    trainer = _bare_trainer()
    before = trainer.model.weight.detach().clone()
    stats: dict = {}
    bad = trainer.model(torch.tensor([[float("nan"), 1.0, 1.0]])).sum()
    trainer.backward(bad, ends_update=True, group_size=1, stats=stats)
    assert torch.equal(trainer.model.weight, before) and stats["skipped_updates"] == [1.0]
    assert trainer.model.weight.grad is None
    good = trainer.model(torch.ones(1, 3)).sum()
    trainer.backward(good, ends_update=True, group_size=1, stats=stats)
    assert not torch.equal(trainer.model.weight, before) and stats["skipped_updates"] == [1.0, 0.0]
