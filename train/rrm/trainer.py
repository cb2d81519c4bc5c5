"""What SFT and GCPO share: accelerate setup, the model and optimizer, data order, the step loop, metrics,
checkpoints with exact resume, and the final ``model/`` directory (LoRA merged; loads with ``from_pretrained``,
the MLLM client's transformers backend, or vLLM).

Multi-process: ``accelerate launch -m train.rrm sft --config ...``: each process takes every ``num_processes``-th
item of the step's batch and DDP averages the gradients.
"""
from __future__ import annotations

from train.rrm.errors import UserError

import json
import math
import time
from abc import ABC, abstractmethod
from pathlib import Path

import torch

from editkit.store import atomic_dir, write_json
from train.rrm.model import load_rrm, save_model_dir
from train.rrm.state import list_checkpoints, load_state, resolve_resume, rng_state, save_state


class RRMTrainer(ABC):
    name = "rrm"

    def __init__(self, config, items: list, rejected: list[dict]):
        from accelerate import Accelerator

        from train.rrm.config import to_dict

        if not items:
            raise UserError(f"no usable training records ({len(rejected)} rejected"
                             + (f", e.g. {rejected[0]['where']}: {rejected[0]['reason']})" if rejected else ")"))
        self.config, self.items = config, items
        precision = config.train.mixed_precision
        if precision == "auto":
            precision = "bf16" if torch.cuda.is_available() else "no"
        self.accelerator = Accelerator(mixed_precision=precision, cpu=not torch.cuda.is_available())
        torch.manual_seed(config.train.seed)
        model, self.processor = load_rrm(config.model, config.lora)
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=config.optim.learning_rate, betas=tuple(config.optim.betas),
                                      weight_decay=config.optim.weight_decay)
        self.model, self.optimizer = self.accelerator.prepare(model, optimizer)
        self.device = self.accelerator.device
        self.output_dir = Path(config.output_dir)
        if self.accelerator.is_main_process:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            write_json(self.output_dir / "config.json", to_dict(config))
            write_json(self.output_dir / "rejected.json", rejected)
            if rejected:
                self.accelerator.print(f"{len(rejected)} record(s) rejected, reasons in {self.output_dir}/rejected.json")

    # ------------------------------------------------------------------ data order
    def step_items(self, step: int) -> list:
        """This process's share of step ``step``'s batch: a seeded permutation per epoch, a pure function of the
        step (so a resumed run draws exactly what the uninterrupted one drew)."""
        size, count = self.config.train.batch_size, len(self.items)
        picked = []
        for position in range((step - 1) * size, step * size):
            epoch, offset = divmod(position, count)
            order = torch.randperm(count, generator=torch.Generator().manual_seed(self.config.train.seed * 7919 + epoch))
            picked.append(self.items[int(order[offset])])
        acc = self.accelerator
        return picked[acc.process_index::acc.num_processes]

    def micro_batches(self, items: list) -> list[list]:
        size = self.config.train.micro_batch_size
        return [items[i:i + size] for i in range(0, len(items), size)]

    # ------------------------------------------------------------------ the loop
    @abstractmethod
    def train_step(self, step: int) -> dict[str, float]:
        """One optimizer step (or GCPO's sample + update); returns scalars to log."""

    def clip_and_step(self) -> float:
        max_norm = self.config.optim.max_grad_norm if self.config.optim.max_grad_norm > 0 else float("inf")
        norm = float(self.accelerator.clip_grad_norm_(self.model.parameters(), max_norm))
        if math.isfinite(norm):  # a NaN gradient would poison the weights: skip that update
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return norm

    def fit(self, resume: str | None = None) -> Path:
        cfg, acc = self.config, self.accelerator
        start = self._resume(resume)
        metrics = self.output_dir / "metrics.jsonl"
        if acc.is_main_process:
            kept = [l for l in metrics.read_text().splitlines() if json.loads(l)["step"] <= start] \
                if metrics.exists() else []
            metrics.write_text("".join(l + "\n" for l in kept))
        for step in range(start + 1, cfg.train.max_steps + 1):
            began = time.perf_counter()
            self.model.train()
            scalars = self.reduce_mean(self.train_step(step))
            scalars["step_seconds"] = time.perf_counter() - began
            if acc.is_main_process:
                with open(metrics, "a") as handle:
                    handle.write(json.dumps({"step": step, **scalars}) + "\n")
            every = cfg.checkpoint.every
            if (every > 0 and step % every == 0) or step == cfg.train.max_steps:
                self.save(step)
        final = self.output_dir / "model"
        if acc.is_main_process:
            with atomic_dir(final) as tmp:
                save_model_dir(self.model, self.processor, tmp)
        acc.wait_for_everyone()
        return final

    def reduce_mean(self, stats: dict[str, float]) -> dict[str, float]:
        if self.accelerator.num_processes == 1 or not stats:
            return stats
        keys = sorted(stats)
        values = torch.tensor([stats[k] for k in keys], dtype=torch.float64, device=self.device)
        return dict(zip(keys, self.accelerator.reduce(values, reduction="mean").tolist()))

    # ------------------------------------------------------------------ checkpoints
    def save(self, step: int) -> None:
        from accelerate.utils import gather_object

        states = gather_object([rng_state()])
        if self.accelerator.is_main_process:
            save_state(self.output_dir / "checkpoints", step, self.model, self.optimizer,
                       {"algorithm": self.name}, states, self.config.checkpoint.keep_last)
        self.accelerator.wait_for_everyone()

    def _resume(self, resume: str | None) -> int:
        path = resolve_resume(resume, self.output_dir / "checkpoints")
        if path is None:
            return 0
        step, _ = load_state(path, self.model, self.optimizer, self.accelerator.process_index, self.name)
        self.accelerator.print(f"resumed from {path} (step {step})")
        return step


def checkpoint_steps(output_dir: Path) -> list[int]:
    return [step for step, _ in list_checkpoints(Path(output_dir) / "checkpoints")]
