"""The rollout loop over micro-batches: roll out one micro-batch, decode it, hand its reward inputs to the reward
thread (:mod:`train.rollout.reward_thread`), go on with the next one. Every trainer's ``sample()`` goes through
:func:`sample_micro_batches`.

When a configured reward declares the ``attention_maps`` capability (:func:`train.rewards.needs_capability`; the
built-in ``attention_concentration`` does), :class:`AttentionWiring` records each micro-batch's target-phrase
attention during its rollout and hands it to that micro-batch's reward as ``extras``.
"""
from __future__ import annotations

from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch

from train.rollout.reward_inputs import micro_batch_inputs
from train.rollout.reward_thread import PendingRewards
from train.rollout.sampler import Trajectory


@dataclass
class MicroBatchRollouts:
    """A batch's rollouts, micro-batch by micro-batch, and what every trainer keeps of them."""

    trajectories: list[Trajectory]  # one per micro-batch, in order
    final: torch.Tensor  # (N, L, C) clean latents
    images: torch.Tensor  # (N, 3, H, W) decoded, CPU
    extras: dict[str, Any]  # the reward extras (attention maps when recorded), per sample
    pending_rewards: PendingRewards | None  # the micro-batches' rewards on the reward thread (with overlap)


class AttentionWiring:
    """RC-GRPO's attention-concentration reward needs the rollout's text→image attention of the edit's target
    phrase: one :class:`train.rollout.attention.AttentionRecorder` on the transformer, opened around each rollout."""

    def __init__(self, adapter, height: int, width: int):
        from train.rollout.attention import AttentionRecorder

        self.adapter = adapter
        self.grid = tuple(int(n) for n in adapter.token_grid(height, width))
        self.recorder = AttentionRecorder(adapter.transformer)  # unsupported transformers fail here, at start-up

    def record(self, prompts: list[str], phrases: list, run: Callable[[], Any],
               cond=None) -> tuple[Any, dict[str, Any]]:
        """``run()`` with the prompts' phrase attention recorded -> (its result, ``{"attention": (B, L) maps,
        "attention_grid": (rows, cols)}``). ``cond``: these prompts' Conditioning (what ``run`` feeds the model);
        Qwen-Image-Edit locates the phrase tokens in it. With true CFG the maps are the conditional branch's."""
        text_mask = self.adapter.phrase_token_mask(prompts, phrases, cond=cond)
        try:
            with self.recorder.recording(text_mask, self.grid[0] * self.grid[1]):
                result = run()
        except BaseException:
            with suppress(RuntimeError):  # drop a partial recording so the next one starts clean
                self.recorder.take()
            raise
        return result, {"attention": self.recorder.take(), "attention_grid": self.grid}


def recorded_rollout(attention: AttentionWiring | None, prompts: list[str], phrases: list, run: Callable[[], Any],
                     cond=None) -> tuple[Any, dict[str, Any]]:
    """``run()`` and its reward extras: recorded through ``attention`` when a reward needs attention maps, else no
    extras."""
    return attention.record(prompts, phrases, run, cond=cond) if attention is not None else (run(), {})


def attention_wiring(adapter, reward_weights: dict[str, float], height: int, width: int) -> AttentionWiring | None:
    """The recorder wiring when a configured reward declares the ``attention_maps`` capability, else None (no
    hooks)."""
    from train.rewards import ATTENTION_MAPS, needs_capability

    return AttentionWiring(adapter, height, width) if needs_capability(reward_weights, ATTENTION_MAPS) else None


def merge_extras(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-micro-batch extras -> the batch's: tensors are per sample (concatenated), anything else is shared."""
    if not parts or not parts[0]:
        return {}
    return {key: torch.cat([p[key] for p in parts]) if isinstance(parts[0][key], torch.Tensor) else parts[0][key]
            for key in parts[0]}


def sample_micro_batches(trainer, batch, roll_out: Callable[[slice], Trajectory]) -> MicroBatchRollouts:
    """Roll out every micro-batch with ``roll_out(mb)``, decode it, and with overlap submit its rewards before the
    next micro-batch starts. Each micro-batch's reward gets its own slice of the recorded attention maps."""
    pending = trainer.reward_scheduler.start()
    attention: AttentionWiring | None = trainer.attention
    trajectories, images, extras = [], [], []
    try:
        for mb in trainer.micro_batches(len(batch.seeds)):
            phrases = batch.phrases[mb] if batch.phrases is not None else [[] for _ in batch.prompts[mb]]
            trajectory, mb_extras = recorded_rollout(attention, batch.prompts[mb], phrases, partial(roll_out, mb),
                                                     batch.cond.select(mb))
            trajectories.append(trajectory)
            images.append(trainer.adapter.decode(trajectory.final, trainer.height, trainer.width).cpu())
            extras.append(mb_extras)
            if pending is not None:
                pending.submit(micro_batch_inputs(batch, mb, images[-1], mb_extras))
    except BaseException:
        if pending is not None:
            pending.cancel()
        raise
    return MicroBatchRollouts(trajectories, torch.cat([t.final for t in trajectories]), torch.cat(images),
                              merge_extras(extras), pending)
