"""The editing model's trainer lifecycle, shared by its algorithms: sample → score → advantages → optimise →
evaluate, each step of the runtime's loop (:mod:`train.runtime`: logging, checkpoints, exact resume).

Subclasses (:mod:`train.trainers.grpo`, :mod:`train.trainers.nft`) decide how rollouts are sampled and what is
optimised; everything else of an editing model (the adapter and its LoRA, FSDP2, data order, rewards, advantages,
held-out evaluation) lives here once.
"""
from __future__ import annotations

from abc import abstractmethod

import numpy as np
import torch

from editkit.store import atomic_dir
from train.algorithms.advantages import Advantages, gathered_advantages
from train.algorithms.region_advantages import token_mask
from train.algorithms.region_noise import group_shared_noise, region_decoupled_noise
from train.checkpoint import adapter_weights
from train.config import TrainConfig
from train.data import EditDataset, GroupSampler, iteration_slots
from train.parallel import build_parallel, full_lora_state
from train.rewards import WeightedRewards
from train.rollout.micro_batches import attention_wiring
from train.rollout.reward_inputs import micro_batch_inputs, stacked_targets
from train.rollout.reward_thread import RewardScheduler
from train.trainers.batch import Batch, sample_seed
from train.trainers.heldout import heldout_metrics
from train.runtime import Runtime, mean_stats, weight_dtype

__all__ = ["Trainer", "mean_stats"]


class Trainer(Runtime):
    name = "base"

    def __init__(self, config: TrainConfig):
        from train.adapters import build_adapter

        self.data = EditDataset(config.data, seed=config.train.seed)  # first: a bad path fails before model loading
        super().__init__(config)
        if self.accelerator.distributed_type.name.startswith("FSDP"):
            from editkit.errors import ConfigError

            raise ConfigError("the trainer shards the transformer itself: launch with a plain multi-process accelerate "
                              "config (train/configs/accelerate_multinode.yaml) and set train.parallelism=fsdp2")
        dtype = weight_dtype(self.precision)
        parallel = build_parallel(config.train.parallelism, self.accelerator, config.train.fsdp, dtype)
        self.adapter = build_adapter(config.model, self.accelerator.device, dtype)
        self.adapter.add_lora(config.lora)  # before sharding: the same LoRA initialisation under DDP and FSDP2
        self.prepare_training(self.adapter.transformer, parallel)
        if config.train.compile:
            compile_blocks(self.adapter.transformer)
        self.sampler = GroupSampler(self.data.train_rows, seed=config.train.seed)
        self.rewards = WeightedRewards(config.rewards.weights, config.rewards.options)
        self.reward_scheduler = RewardScheduler(self.rewards, config.rewards.overlap)  # scores during rollout
        self.height, self.width = self.data.height, self.data.width
        self.attention = attention_wiring(self.adapter, config.rewards.weights, self.height, self.width)
        self.sigmas = self.adapter.sigmas(config.sampler.num_steps, self.height, self.width)
        self.advantage_stats: dict = {}
        self.skipped_rows: dict[int, str] = {}  # unreadable dataset rows -> reason (recorded, never trained on)
        self.banned_rows: set[int] = set()  # rows whose group was banned (advantages.filter: ban_prompt)
        self.start_logger()

    # ------------------------------------------------------------------ the lifecycle
    def step(self, step: int) -> dict[str, float]:
        cfg, acc = self.config, self.accelerator
        batch = self.make_batch(step)
        self.sample(batch, step)
        rewards, parts = self.score(batch)
        advantages = gathered_advantages(acc, rewards, batch.group_ids, cfg.advantages)
        self.advantage_stats = advantages.stats
        self.banned_rows.update(batch.group_rows[g] for g in advantages.banned)
        scalars = {**advantages.stats, **self.reduce_mean(self.optimize(batch, advantages, step))}
        for name, values in parts.items():  # each reward's mean over all processes' finite values
            values = acc.gather(values.to(acc.device, torch.float32).contiguous())
            if torch.isfinite(values).any():
                scalars[f"reward_{name}"] = float(values[torch.isfinite(values)].mean())
        return scalars

    def finish(self):
        lora = full_lora_state(self.adapter.transformer)  # collective: gathered from the shards under FSDP2
        final = self.output_dir / "lora"
        if self.accelerator.is_main_process:
            with atomic_dir(final) as tmp:
                self.adapter.save_lora(tmp, lora)
        return final

    def close(self) -> None:
        self.reward_scheduler.close()
        super().close()

    @abstractmethod
    def sample(self, batch: Batch, step: int) -> None:
        """Roll out the policy for every sample; set ``batch.samples`` (a :class:`~train.trainers.batch.Samples`)."""

    @abstractmethod
    def optimize(self, batch: Batch, advantages: Advantages, step: int) -> dict[str, float]:
        """Gradient updates for this iteration; returns scalars to log (``loss`` at least)."""

    # ------------------------------------------------------------------ shared steps
    def make_batch(self, step: int) -> Batch:
        cfg, acc = self.config.train, self.accelerator
        examples = {}
        for _ in range(2 * len(self.data.train_rows) + cfg.groups_per_step):  # 2 epochs at most
            if len(examples) == cfg.groups_per_step:
                break
            row = self.sampler.next_prompts(1)[0]  # every process draws and validates the same rows
            example = self.checked_example(row)
            if example is not None:
                examples[row] = example
        else:
            raise ValueError(f"cannot find {cfg.groups_per_step} distinct readable training rows for one step "
                             f"({len(self.data.train_rows)} rows, {len(self.skipped_rows)} unreadable, "
                             f"{len(self.banned_rows)} banned by advantages.filter: ban_prompt)")
        rows = list(examples)
        slots = iteration_slots(rows, step, cfg.group_size, acc.process_index, acc.num_processes)
        unique = list(dict.fromkeys(s.row for s in slots))
        cond = self.adapter.condition([examples[r].prompt for r in unique],
                                      torch.stack([examples[r].source for r in unique]))
        index = torch.tensor([unique.index(s.row) for s in slots])
        return Batch(cond=cond.select(index.to(acc.device)),
                     sources=torch.stack([examples[s.row].source for s in slots]),
                     masks=torch.stack([examples[s.row].edit_mask for s in slots]),
                     prompts=[examples[s.row].prompt for s in slots],
                     edit_types=[examples[s.row].edit_type for s in slots],
                     group_ids=torch.tensor([s.group for s in slots], device=acc.device),
                     seeds=[sample_seed(cfg.seed, step, s.index) for s in slots],
                     targets=stacked_targets([examples[s.row] for s in slots]),
                     phrases=[list(examples[s.row].phrases) for s in slots],
                     group_rows={step * len(rows) + g: row for g, row in enumerate(rows)})  # as iteration_slots

    def checked_example(self, row: int):
        """The row's example, or None if it is unreadable; the reason goes to ``skipped_rows.json``, once."""
        if row in self.skipped_rows or row in self.banned_rows:
            return None
        try:
            return self.data.example(row)
        except ValueError as error:
            self.skipped_rows[row] = str(error)
            if len(self.skipped_rows) >= len(self.data.train_rows) + len(self.data.eval_rows):
                raise ValueError(f"every dataset row is unreadable, e.g. {error}") from error
            if self.accelerator.is_main_process:
                from editkit.store import write_json

                write_json(self.output_dir / "skipped_rows.json", {str(k): v for k, v in self.skipped_rows.items()})
                self.accelerator.print(f"skipping {error}")
            return None

    def micro_batches(self, count: int) -> list[slice]:
        size = self.config.train.micro_batch_size
        return [slice(start, min(start + size, count)) for start in range(0, count, size)]

    def initial_noise(self, seeds: list[int]) -> tuple[torch.Tensor, list[torch.Generator]]:
        generators = [torch.Generator().manual_seed(s) for s in seeds]
        noise = torch.cat([self.adapter.noise(1, self.height, self.width, g) for g in generators])
        return noise, generators

    def rollout_noise(self, batch: Batch, step: int) -> tuple[torch.Tensor, list[torch.Generator]]:
        """Per-sample initial noise and generators; with ``sampler.region_noise`` (RC-GRPO) a group shares the
        noise outside the edit mask."""
        noise, generators = self.initial_noise(batch.seeds)
        if self.config.sampler.region_noise:
            shared = group_shared_noise(self.adapter, self.height, self.width, batch.group_ids.cpu(),
                                        self.config.train.seed, step)
            noise = region_decoupled_noise(noise, batch.group_ids.cpu(), self.token_masks(batch), shared)
        return noise, generators

    def token_masks(self, batch: Batch) -> torch.Tensor:
        """The edit masks on the packed-token grid, (N, L) bool."""
        return token_mask(batch.masks, *self.adapter.token_grid(self.height, self.width))

    def trained_steps(self, available: list[int], step: int) -> list[int]:
        """The window's steps trained this iteration: all, or a seeded subset (same on every process)."""
        count = self.config.sampler.train_steps
        if count <= 0 or count >= len(available):
            return available
        chosen = np.random.default_rng([self.config.train.seed, step, 7]).choice(available, count, replace=False)
        return sorted(int(i) for i in chosen)

    def score(self, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Every sample's total reward (N,) and each reward's values, kept in ``batch.samples.reward_parts``."""
        samples = batch.samples
        pending, samples.pending_rewards = samples.pending_rewards, None  # scored during the rollout, with overlap
        if pending is not None:
            total, parts = pending.join()
        else:
            total, parts = self.rewards(micro_batch_inputs(batch, slice(None), samples.images, samples.extras))
        samples.reward_parts = parts  # region-specific advantages need each reward
        return total.to(torch.float32).to(self.accelerator.device), parts

    def evaluation_due(self, step: int) -> bool:
        every = self.config.eval.every
        return every > 0 and (step % every == 0 or step == self.config.train.max_steps)

    def evaluate(self, step: int) -> dict[str, float]:
        main = self.accelerator.is_main_process
        # under FSDP2 every process must join each transformer call: all evaluate, the main process reports
        result = heldout_metrics(self) if main or self.parallel.collective_forward else {}
        self.accelerator.wait_for_everyone()
        return result if main else {}

    # ------------------------------------------------------------------ checkpoints
    def trained_weights(self):
        return adapter_weights(self.adapter)

    def trainer_state(self, step: int) -> dict:
        return {**super().trainer_state(step), "sampler": self.sampler.state_dict(),
                "advantage_stats": self.advantage_stats, "skipped_rows": self.skipped_rows,
                "banned_rows": sorted(self.banned_rows)}

    def load_trainer_state(self, state: dict) -> None:
        self.sampler.load_state_dict(state["sampler"])
        self.advantage_stats = state.get("advantage_stats", {})
        self.skipped_rows = {int(k): v for k, v in state.get("skipped_rows", {}).items()}
        self.banned_rows = {int(r) for r in state.get("banned_rows", [])}


def compile_blocks(transformer: torch.nn.Module) -> None:
    """Regional compilation: torch.compile each of the transformer's repeated blocks in place (diffusers'
    ``compile_repeated_blocks``; blocks of one class share their compiled code). Static shapes: a last micro-batch
    of another size compiles once more."""
    model = getattr(transformer, "module", transformer)  # DDP's wrapper holds the diffusers model
    if not getattr(model, "_repeated_blocks", None):
        from editkit.errors import ConfigError

        raise ConfigError(f"train.compile: {type(model).__name__} names no repeated blocks to compile")
    model.compile_repeated_blocks(dynamic=False)
