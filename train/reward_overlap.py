"""Reward calls overlapped with rollout: each micro-batch is scored on a background thread while the next one rolls
out, so an I/O-bound judge (the MLLM reward's HTTP calls) costs little step time.

``sample()`` of every trainer goes through :func:`sample_micro_batches`: roll out one micro-batch, decode it, hand
its :class:`RewardInputs` slice to the reward thread, go on with the next micro-batch; ``score()`` then joins the
micro-batches' results in order (:meth:`PendingRewards.join`). Rewards are per sample, so the values are exactly
those of one call on the whole batch, which is what ``rewards.overlap = false`` still does.

One worker thread, on purpose: reward calls run one at a time and in submission order, so stateful rewards
(failure counters, ``last_errors``) see the same sequence of calls as without overlap and need no locks. A reward
exception is re-raised with its original type and message by ``score()`` — or earlier, by the rollout loop, as
soon as it is known — and the micro-batches still queued are cancelled, so nothing waits on a dead step.
"""
from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable

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

    Returns the trajectories and the batch's ``samples`` entries: ``images`` (N, 3, H, W) CPU, ``extras`` (rollout
    by-products such as attention maps, when recorded) and ``pending_rewards`` (with overlap).
    """
    pending = trainer.reward_scheduler.start()
    recorder = getattr(trainer, "attention", None)
    trajectories, images, extras = [], [], []
    try:
        for mb in trainer.micro_batches(len(batch.seeds)):
            if recorder is not None:
                trajectory, mb_extras = recorder.roll_out(batch, mb, roll_out)
            else:
                trajectory, mb_extras = roll_out(mb), {}
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
