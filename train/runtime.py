"""The runtime every trainer runs on: the editing model's GRPO and NFT (:mod:`train.trainers.base`) and the reward
model's SFT and GCPO (:mod:`train.rrm.trainer`), with the config sections it reads (``optim``, ``checkpoint``,
``logging``; every trainer config has them).

One loop (:meth:`Runtime.fit`: resume → per step the trainer's :meth:`~Runtime.step` → evaluation → log →
checkpoint → the final weights), one way to build the optimizer (AdamW + linear warm-up, ``optim``), one update
rule (gradient accumulation without sync, clipping, non-finite updates skipped), one logger (``logging``: metrics
file, plot CSV, TensorBoard, wandb) and one checkpoint format with exact resume (:mod:`train.checkpoint`). A config
read by a runtime has ``output_dir`` and the sections ``optim``, ``train`` (``max_steps``, ``seed``,
``mixed_precision``), ``checkpoint`` and ``logging``.
"""
from __future__ import annotations

import dataclasses
import math
import time
from abc import ABC, abstractmethod
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import torch

from editkit.config_meta import Range
from editkit.errors import OutputRefused
from train.checkpoint import list_checkpoints, load_checkpoint, resolve_resume, save_checkpoint


@dataclass
class OptimConfig:
    learning_rate: Annotated[float, Range(gt=0, le=1)] = 0.0001
    """AdamW learning rate of the trained parameters"""
    weight_decay: Annotated[float, Range(ge=0)] = 0.0001
    """AdamW decoupled weight decay"""
    betas: Annotated[list[float], Range(ge=0, lt=1)] = field(default_factory=lambda: [0.9, 0.999])
    """AdamW [beta1, beta2] moment decay rates"""
    max_grad_norm: Annotated[float, Range(ge=0)] = 1.0
    """gradient norm clip before each update (0 = no clipping)"""
    warmup_steps: Annotated[int, Range(ge=0)] = 0
    """linear warm-up of the LR, then constant"""
    gradient_accumulation: Annotated[int, Range(ge=0)] = 0
    """backward passes per optimizer update; 0 = one update per iteration"""


@dataclass
class CheckpointConfig:
    every: Annotated[int, Range(ge=0)] = 10
    """iterations between checkpoints, plus one at the last iteration (0 = none)"""
    keep_last: Annotated[int, Range(ge=1)] = 3
    """how many most recent checkpoints are kept on disk"""


@dataclass
class LoggingConfig:
    tensorboard: bool = True
    """write TensorBoard event files under output_dir"""
    wandb: bool = False
    """also log to Weights & Biases (only if wandb is installed)"""
    wandb_project: str = "editkit"
    """the Weights & Biases project runs are logged to"""
    plots_csv: str = "plots/train_rewards.csv"
    """per-step curve (rewards; a loss for the reward model) for `dvc plots show`, relative to output_dir"""
    progress: bool = True
    """show a progress bar of the training steps"""


def weight_dtype(precision: str) -> torch.dtype:
    return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision, torch.float32)


class Runtime(ABC):
    name = "runtime"  # written into checkpoints: a run resumes only checkpoints of its own trainer
    csv_fields: tuple[str, ...] | None = None  # the plot CSV's columns (None: the logger's, the editor's rewards)

    def __init__(self, config):
        from accelerate import Accelerator

        self.config = config
        self.output_dir = Path(config.output_dir)
        precision = config.train.mixed_precision
        self.precision = ("bf16" if torch.cuda.is_available() else "no") if precision == "auto" else precision
        # cpu=True without CUDA makes torchrun/`accelerate launch --multi_gpu` processes a gloo MULTI_CPU group
        self.accelerator = Accelerator(mixed_precision=self.precision, cpu=not torch.cuda.is_available())
        self.resumed_state: dict = {}
        torch.manual_seed(config.train.seed)

    # ------------------------------------------------------------------ set-up helpers
    def prepare_training(self, module: torch.nn.Module, parallel) -> None:
        """``self.model`` (``module`` prepared by ``parallel``: DDP-wrapped or sharded), AdamW over its trainable
        parameters and the warm-up LR schedule."""
        optim = self.config.optim
        self.parallel = parallel
        self.model, self.optimizer = parallel.prepare(module, lambda params: torch.optim.AdamW(
            params, lr=optim.learning_rate, betas=tuple(optim.betas), weight_decay=optim.weight_decay))
        warmup = optim.warmup_steps
        self.lr_scheduler = torch.optim.lr_scheduler.LambdaLR(
            getattr(self.optimizer, "optimizer", self.optimizer),  # accelerate's wrapper holds the torch optimizer
            lambda update: min(1.0, (update + 1) / warmup) if warmup > 0 else 1.0)

    def start_logger(self) -> None:
        from train.logger import RunLogger

        self.logger = RunLogger(self.output_dir, self.config.logging, dataclasses.asdict(self.config),
                                self.accelerator.is_main_process, self.csv_fields)

    # ------------------------------------------------------------------ the loop
    def fit(self, resume: str | None = None):
        """Train from step 1 (or from the checkpoint ``resume`` names) to ``train.max_steps``; returns
        :meth:`finish`'s result (where the final weights are)."""
        from tqdm.auto import tqdm

        cfg, acc = self.config, self.accelerator
        start = self._resume(resume)
        self.logger.truncate_after(start)
        bar = tqdm(range(start + 1, cfg.train.max_steps + 1), desc=f"{self.name} steps", initial=start,
                   total=cfg.train.max_steps, disable=not (cfg.logging.progress and acc.is_main_process))
        for step in bar:
            began = time.perf_counter()
            scalars = {**self.step(step), "lr": self.lr_scheduler.get_last_lr()[0]}
            scalars["step_seconds"] = time.perf_counter() - began
            if self.evaluation_due(step):
                with self.logger.evaluation(self, step):  # its samples go into the run's report page
                    scalars.update(self.evaluate(step))
            self.logger.log(step, scalars)
            bar.set_postfix({k: f"{scalars[k]:.4f}" for k in ("reward_mean", "loss") if k in scalars})
            every = cfg.checkpoint.every
            if every > 0 and (step % every == 0 or step == cfg.train.max_steps):
                self.save(step)
        result = self.finish()
        self.accelerator.wait_for_everyone()
        self.close()
        return result

    @abstractmethod
    def step(self, step: int) -> dict[str, float]:
        """One training iteration (every process calls it); returns the scalars to log, averaged over processes."""

    @abstractmethod
    def finish(self):
        """Write the trained weights after the last step (collective); returns their path."""

    def evaluation_due(self, step: int) -> bool:
        return False

    def evaluate(self, step: int) -> dict[str, float]:
        return {}

    def close(self) -> None:
        self.logger.close()

    # ------------------------------------------------------------------ optimizer updates
    def update_schedule(self, units: int) -> list[tuple[bool, int]]:
        """Per backward unit: (ends an optimizer update?, number of units in its update)."""
        accumulate = self.config.optim.gradient_accumulation or units
        plan = []
        for k in range(units):
            group_start = (k // accumulate) * accumulate
            group_size = min(accumulate, units - group_start)
            plan.append(((k + 1) % accumulate == 0 or k == units - 1, group_size))
        return plan

    def backward(self, loss: torch.Tensor, ends_update: bool, group_size: int, stats: dict) -> None:
        """Accumulate ``loss / group_size``; gradient sync (DDP all-reduce, FSDP2 reduce-scatter) only on the last
        backward of an update."""
        context = nullcontext() if ends_update else self.parallel.no_sync(self.model)
        with context:
            self.accelerator.backward(loss / group_size)
        if ends_update:
            max_norm = self.config.optim.max_grad_norm if self.config.optim.max_grad_norm > 0 else float("inf")
            norm = self.parallel.clip_grad_norm(self.model, max_norm)
            # NaN/inf gradients (all-reduced, so every process agrees) would poison the weights: skip that update
            skipped = not math.isfinite(norm)
            stats.setdefault("skipped_updates", []).append(float(skipped))
            if not skipped:
                stats.setdefault("grad_norm", []).append(norm)
                self.optimizer.step()
                self.lr_scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)

    def reduce_mean(self, stats: dict[str, float]) -> dict[str, float]:
        """Average per-process scalars over processes (every process logs the same keys)."""
        if self.accelerator.num_processes == 1 or not stats:
            return stats
        keys = sorted(stats)
        values = torch.tensor([stats[k] for k in keys], dtype=torch.float64, device=self.accelerator.device)
        values = self.accelerator.reduce(values, reduction="mean")
        return {k: float(v) for k, v in zip(keys, values.tolist())}

    # ------------------------------------------------------------------ checkpoints
    @abstractmethod
    def trained_weights(self):
        """What checkpoints keep of the model: a :class:`~train.checkpoint.TrainedWeights` (or an adapter)."""

    def trainer_state(self, step: int) -> dict:
        """The trainer's own state saved with each checkpoint (plain values and tensors)."""
        return {"step": step, "algorithm": self.name}

    def load_trainer_state(self, state: dict) -> None:
        """Restore what :meth:`trainer_state` saved (the weights, optimizer and RNG are restored already)."""

    def save(self, step: int) -> None:
        save_checkpoint(self.accelerator, self.trained_weights(), self.optimizer, self.lr_scheduler,
                        self.trainer_state(step), self.output_dir / "checkpoints", step,
                        self.config.checkpoint.keep_last)

    def _resume(self, resume: str | None) -> int:
        root = self.output_dir / "checkpoints"
        path = resolve_resume(resume, root)
        if path is None:
            if resume != "auto" and list_checkpoints(root):
                raise OutputRefused(f"{root} holds checkpoints of an earlier run: pass --resume auto to continue "
                                    "it, or use a new output_dir")
            return 0
        state = load_checkpoint(self.accelerator, self.trained_weights(), self.optimizer, self.lr_scheduler, path,
                                algorithm=self.name)
        self.load_trainer_state(state)
        self.resumed_state = state
        self.accelerator.print(f"resumed from {path} (step {state['step']})")
        return int(state["step"])


def mean_stats(stats: dict[str, list]) -> dict[str, float]:
    return {k: float(torch.tensor(v, dtype=torch.float64).mean()) for k, v in stats.items() if len(v)}

