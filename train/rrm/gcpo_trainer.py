"""GCPO training of the RRM on pairwise preferences (`editkit rrm gcpo --config ...`), one step of the trainers'
lifecycle: sample → score → advantages → optimise.

Per step: take ``train.batch_size`` non-tie pairs; sample ``gcpo.num_trajectories`` trajectories for the winner
image and as many for the loser (batched generation, left padding, ``train.micro_batch_size`` sequences per
generate call); parse each trajectory's score (:func:`train.rrm.format.trajectory_score`, NaN if invalid); rewards
and advantages from :mod:`train.rrm.gcpo`; old log-probs from one no-grad forward; then ``gcpo.updates_per_batch``
clipped-surrogate updates (the first on-policy: ratio 1). No KL term, no reference model.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch

from train.rrm.data import load_editreward, load_pairs
from train.rrm.format import build_request, trajectory_score
from train.rrm.gcpo import clipped_surrogate, gcpo_advantages
from train.rrm.model import answer_logprobs, generate
from train.rrm.trainer import RRMTrainer


def read_preferences(data) -> tuple[list, list[dict]]:
    layout = data.layout
    if layout == "auto":
        path = Path(data.path)
        layout = "pairs" if path.suffix == ".jsonl" or (path.is_dir() and not any(path.rglob("*.parquet"))) \
            else "editreward"
    if layout == "pairs":
        return load_pairs(data.path)
    return load_editreward(data.path, data.split, data.limit)


@dataclass
class Trajectories:
    """One step's sampled trajectories, in generation chunks: (prompt inputs, answers) per chunk, winner's N then
    loser's N per pair."""

    chunks: list
    texts: list[str]
    sample_seconds: float

    @property
    def tokens(self) -> int:
        return sum(int(answers.mask.sum()) for _, answers in self.chunks)


class GCPOTrainer(RRMTrainer):
    name = "gcpo"
    csv_fields = ("step", "loss", "pair_accuracy", "reward_winner", "reward_loser", "valid_fraction")

    def __init__(self, config):
        pairs, rejected = read_preferences(config.data)
        ties = [p for p in pairs if p.winner == "tie"]
        rejected = rejected + [{"where": "pairs", "reason": f"{len(ties)} tie(s) skipped: a tie has no winner"}] \
            if ties else rejected
        super().__init__(config, [p for p in pairs if p.winner != "tie"], rejected)

    def step(self, step: int) -> dict[str, float]:
        pairs = self.step_items(step)
        trajectories = self.sample(pairs)
        scores = self.score(trajectories).view(len(pairs), 2, -1)  # [pair, winner/loser, trajectory]
        adv_w, adv_l, reward_w, reward_l = gcpo_advantages(scores[:, 0], scores[:, 1], self.config.gcpo.tie_value,
                                                           self.config.gcpo.eps)
        stats = self.optimize(trajectories, torch.stack([adv_w, adv_l], dim=1).reshape(-1))
        means = torch.nanmean(scores, dim=-1)  # per pair and side, over valid trajectories
        tokens = trajectories.tokens
        return self.reduce_mean({
            **stats, "valid_fraction": float(torch.isfinite(scores).double().mean()),
            "reward_winner": float(reward_w.mean()), "reward_loser": float(reward_l.mean()),
            "score_winner": _finite_mean(scores[:, 0]), "score_loser": _finite_mean(scores[:, 1]),
            "pair_accuracy": float(((means[:, 0] > means[:, 1]).double()).mean()),
            "sampled_tokens": float(tokens), "sample_tokens_per_s": tokens / max(trajectories.sample_seconds, 1e-9)})

    def sample(self, pairs: list) -> Trajectories:
        cfg, n = self.config, self.config.gcpo.num_trajectories
        requests = []
        for pair in pairs:
            winner, loser = pair.ordered()
            requests += [build_request(pair.instruction, pair.source, winner, cfg.format)] * n
            requests += [build_request(pair.instruction, pair.source, loser, cfg.format)] * n
        self.model.eval()
        began, size = time.perf_counter(), cfg.train.micro_batch_size
        chunks = [generate(self.model, self.processor, requests[i:i + size], cfg.gcpo.max_new_tokens,
                           cfg.gcpo.temperature, self.device) for i in range(0, len(requests), size)]
        texts = [t for _, answers in chunks for t in answers.texts]
        return Trajectories(chunks, texts, time.perf_counter() - began)

    def score(self, trajectories: Trajectories) -> torch.Tensor:
        """Each trajectory's parsed score (NaN: unreadable), float64."""
        return torch.tensor([trajectory_score(t, self.config.format) for t in trajectories.texts],
                            dtype=torch.float64)

    def optimize(self, trajectories: Trajectories, advantages: torch.Tensor) -> dict[str, float]:
        g = self.config.gcpo
        with torch.no_grad():
            old = [answer_logprobs(self.model, prompts, answers) for prompts, answers in trajectories.chunks]
        self.model.train()
        offsets = [0]
        for _, answers in trajectories.chunks:
            offsets.append(offsets[-1] + answers.ids.shape[0])
        units = list(zip(trajectories.chunks, old, offsets))
        updates: dict[str, list] = {}
        losses, clip_fractions = [], []
        for _ in range(g.updates_per_batch):
            total = 0.0
            for group in self.update_groups(units):
                denominator = sum(int(answers.mask.sum()) if g.aggregation == "token_mean" else answers.ids.shape[0]
                                  for (_, answers), _, _ in group)
                for index, ((prompts, answers), logp_old, offset) in enumerate(group):
                    ends_update = index == len(group) - 1
                    with self.sync_context(ends_update):
                        logp = answer_logprobs(self.model, prompts, answers)
                        rows = advantages[offset:offset + answers.ids.shape[0]].to(self.device)
                        loss, parts = clipped_surrogate(logp, logp_old, rows, answers.mask, g.clip_low, g.clip_high,
                                                        g.aggregation, denominator)
                        self.backward(loss, ends_update, 1, updates)
                    total += float(loss.detach())
                    clip_fractions.append(parts["clip_fraction"])
            losses.append(total)
        norms = updates.get("grad_norm", [])
        return {"loss": losses[0], "loss_last": losses[-1], "grad_norm": norms[-1] if norms else float("nan"),
                "skipped_updates": float(sum(updates.get("skipped_updates", []))),
                "clip_fraction": sum(clip_fractions) / len(clip_fractions)}


def _finite_mean(values: torch.Tensor) -> float:
    finite = values[torch.isfinite(values)]
    return float(finite.mean()) if finite.numel() else float("nan")
