"""What the reward model's SFT and GCPO trainers add to the trainers' runtime (:mod:`train.runtime`: the
loop, optimizer updates, logging, checkpoints with exact resume): the Qwen2.5-VL model and its trainable parameters,
the records' order, and the final ``model/`` directory (LoRA merged; loads with ``from_pretrained``, the MLLM
client's transformers backend, or vLLM).

Multi-process: ``accelerate launch -m train.rrm sft --config ...``: each process takes every ``num_processes``-th
item of the step's batch and DDP averages the gradients.
"""
from __future__ import annotations

import dataclasses
from functools import partial
from pathlib import Path

import torch

from editkit.errors import UserError
from editkit.store import atomic_dir, write_json
from train.checkpoint import TrainedWeights
from train.parallel import DataParallel
from train.rrm.model import load_rrm, save_model_dir
from train.runtime import Runtime

WEIGHTS_FILE = "trainable/trainable.safetensors"


class RRMTrainer(Runtime):
    name = "rrm"

    def __init__(self, config, items: list, rejected: list[dict]):
        if not items:
            raise UserError(f"no usable training records ({len(rejected)} rejected"
                            + (f", e.g. {rejected[0]['where']}: {rejected[0]['reason']})" if rejected else ")"))
        super().__init__(config)
        self.items = items
        self.module, self.processor = load_rrm(config.model, config.lora)
        self.prepare_training(self.module, DataParallel(self.accelerator))
        self.device = self.accelerator.device
        self.start_logger()
        if self.accelerator.is_main_process:
            write_json(self.output_dir / "config.json", dataclasses.asdict(config))
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

    def update_groups(self, units: list) -> list[list]:
        """``units`` (micro-batches) split into optimizer updates as ``optim.gradient_accumulation`` plans them."""
        groups, current = [], []
        for unit, (ends_update, _) in zip(units, self.update_schedule(len(units))):
            current.append(unit)
            if ends_update:
                groups.append(current)
                current = []
        return groups

    def sync_context(self, ends_update: bool):
        """Around a micro-batch's forward and backward: gradients are all-reduced only on an update's last one."""
        from contextlib import nullcontext

        return nullcontext() if ends_update else self.parallel.no_sync(self.model)

    # ------------------------------------------------------------------ weights
    def trained_weights(self) -> TrainedWeights:
        return TrainedWeights(self.module, WEIGHTS_FILE, save_trainable, partial(load_trainable, self.module))

    def finish(self) -> Path:
        final = self.output_dir / "model"
        if self.accelerator.is_main_process:
            with atomic_dir(final) as tmp:
                save_model_dir(self.model, self.processor, tmp)
        return final


def save_trainable(folder: Path, state: dict[str, torch.Tensor]) -> None:
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    save_file({name: tensor.contiguous() for name, tensor in state.items()}, str(folder / Path(WEIGHTS_FILE).name))


def load_trainable(module: torch.nn.Module, folder: Path) -> None:
    """The trainable parameters saved by :func:`save_trainable` back into ``module`` (exact values)."""
    from safetensors.torch import load_file

    saved = load_file(str(folder / Path(WEIGHTS_FILE).name))
    params = {name: p for name, p in module.named_parameters() if p.requires_grad}
    if set(saved) != set(params):
        missing, extra = sorted(set(params) - set(saved))[:3], sorted(set(saved) - set(params))[:3]
        raise ValueError(f"the saved parameters do not match the model's trainable ones (missing {missing}, "
                         f"unexpected {extra}): same lora settings?")
    with torch.no_grad():
        for name, parameter in params.items():
            parameter.copy_(saved[name])
