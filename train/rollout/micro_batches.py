"""Reward calls overlapped with rollout: each micro-batch is scored on a background thread while the next one rolls
out, so an I/O-bound judge (the MLLM reward's HTTP calls) costs little step time.

``sample()`` of every trainer goes through :func:`sample_micro_batches`: roll out one micro-batch, decode it, hand
its :class:`RewardInputs` slice to the reward thread, go on with the next micro-batch; ``score()`` then joins the
micro-batches' results in order (:meth:`PendingRewards.join`). Rewards are per sample, so the values are exactly
those of one call on the whole batch, which is what ``rewards.overlap = false`` still does.

It pays when judging takes time proportional to the number of images (a served judge with limited batch slots):
all but the last micro-batch's judging hide behind rollouts (``perf/reward_overlap.py``).

One worker thread, on purpose: reward calls run one at a time and in submission order, so stateful rewards
(failure counters) need no locks; per-call state (``MLLMReward.last_errors``) describes the last micro-batch.
A reward exception is re-raised with its original type and message by ``score()`` — or earlier, by the rollout loop, as
soon as it is known — and the micro-batches still queued are cancelled, so nothing waits on a dead step.

With the ``attention_concentration`` reward configured, :class:`AttentionWiring` records each micro-batch's
target-phrase attention during its rollout and hands it to that micro-batch's reward as ``extras``.
"""
from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import suppress
from functools import partial
from typing import Any

import torch

from train.rewards import RewardInputs

ScoreFn = Callable[[RewardInputs], tuple[torch.Tensor, dict[str, torch.Tensor]]]


class PendingRewards:
    """The reward futures of one batch's micro-batches, in rollout order."""

    def __init__(self, executor: ThreadPoolExecutor, score: ScoreFn):
        self.executor, self.score = executor, score
        self.futures: list[Future] = []

    def submit(self, inputs: RewardInputs) -> None:
        self.raise_failed()
        self.futures.append(self.executor.submit(self.score, inputs))

    def raise_failed(self) -> None:
        """Re-raise the first finished micro-batch's reward exception now instead of after the whole rollout."""
        for future in self.futures:
            if future.done() and not future.cancelled() and future.exception() is not None:
                self.cancel()
                raise future.exception()

    def cancel(self) -> None:
        for future in self.futures:
            future.cancel()  # the queued ones; a running call finishes on its own (the reward has timeouts)

    def join(self) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(total (N,), {name: (N,)}) over all micro-batches, in order."""
        try:
            results = [future.result() for future in self.futures]
        except BaseException:
            self.cancel()
            raise
        if not results:
            raise ValueError("no micro-batch was submitted for scoring")
        totals, parts = zip(*results)
        return torch.cat(totals), {name: torch.cat([p[name] for p in parts]) for name in parts[0]}


class RewardScheduler:
    """Owns the reward thread (created on first use); ``start()`` gives a batch its :class:`PendingRewards`, or
    None when overlap is off (then ``score()`` calls the rewards on the whole batch, as before)."""

    def __init__(self, score: ScoreFn, overlap: bool):
        self.score, self.overlap = score, overlap
        self._executor: ThreadPoolExecutor | None = None

    def start(self) -> PendingRewards | None:
        if not self.overlap:
            return None
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="reward")
        return PendingRewards(self._executor, self.score)

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None


class AttentionWiring:
    """RC-GRPO's attention-concentration reward needs the rollout's text→image attention of the edit's target
    phrase: one :class:`train.attention.AttentionRecorder` on the transformer, opened around each rollout."""

    def __init__(self, adapter, height: int, width: int):
        from train.attention import AttentionRecorder

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
    """``run()`` and its reward extras: recorded through ``attention`` when the attention reward is configured,
    else no extras."""
    return attention.record(prompts, phrases, run, cond=cond) if attention is not None else (run(), {})


def attention_wiring(adapter, reward_weights: dict[str, float], height: int, width: int) -> AttentionWiring | None:
    """The recorder wiring when the ``attention_concentration`` reward is configured, else None (no hooks)."""
    return AttentionWiring(adapter, height, width) if "attention_concentration" in reward_weights else None


def micro_batch_inputs(batch, mb: slice, images: torch.Tensor, extras: dict[str, Any]) -> RewardInputs:
    """The reward inputs of samples ``mb`` of ``batch`` (a :class:`train.trainers.base.Batch`)."""
    return RewardInputs(images, batch.sources[mb], batch.masks[mb], batch.prompts[mb], batch.edit_types[mb],
                        targets=None if batch.targets is None else batch.targets[mb],
                        phrases=None if batch.phrases is None else batch.phrases[mb], extras=extras)


def merge_extras(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-micro-batch extras -> the batch's: tensors are per sample (concatenated), anything else is shared."""
    if not parts or not parts[0]:
        return {}
    return {key: torch.cat([p[key] for p in parts]) if isinstance(parts[0][key], torch.Tensor) else parts[0][key]
            for key in parts[0]}


def sample_micro_batches(trainer, batch, roll_out: Callable[[slice], Any]) -> tuple[list, dict[str, Any]]:
    """Roll out every micro-batch with ``roll_out(mb) -> Trajectory``, decode it, and with overlap submit its
    rewards before the next micro-batch starts.

    Returns the trajectories and the batch's ``samples`` entries: ``images`` (N, 3, H, W) CPU, ``extras`` (the
    attention maps when ``trainer.attention`` records them; each micro-batch's reward gets its own slice) and
    ``pending_rewards`` (with overlap).
    """
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
    samples = {"images": torch.cat(images), "extras": merge_extras(extras)}
    if pending is not None:
        samples["pending_rewards"] = pending
    return trajectories, samples
