"""The reward thread: each rollout micro-batch is scored in the background while the next one rolls out, so an
I/O-bound judge (the MLLM reward's HTTP calls) costs little step time.

:func:`train.rollout.micro_batches.sample_micro_batches` submits each decoded micro-batch's :class:`RewardInputs`
to :class:`PendingRewards`; the trainer's ``score()`` then joins the micro-batches' results in order
(:meth:`PendingRewards.join`). Rewards are per sample, so the values are exactly those of one call on the whole
batch, which is what ``rewards.overlap = false`` still does.

It pays when judging takes time proportional to the number of images (a served judge with limited batch slots):
all but the last micro-batch's judging hide behind rollouts (``perf/reward_overlap.py``).

One worker thread, on purpose: reward calls run one at a time and in submission order, so stateful rewards
(failure counters) need no locks; per-call state (``MLLMReward.last_errors``) describes the last micro-batch.
A reward exception is re-raised with its original type and message by ``score()`` — or earlier, by the rollout loop,
as soon as it is known — and the micro-batches still queued are cancelled, so nothing waits on a dead step.
"""
from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

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
