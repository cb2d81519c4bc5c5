"""GCPO training of the RRM on pairwise preferences (`editkit rrm gcpo --config ...`).

Per step: take ``train.batch_size`` non-tie pairs; sample ``gcpo.num_trajectories`` trajectories for the winner
image and as many for the loser (batched generation, left padding, ``train.micro_batch_size`` sequences per
generate call); parse each trajectory's score (:func:`train.rrm.format.trajectory_score`, NaN if invalid); rewards
and advantages from :mod:`train.rrm.gcpo`; old log-probs from one no-grad forward; then ``gcpo.updates_per_batch``
clipped-surrogate updates (the first on-policy: ratio 1). No KL term, no reference model.
"""
from __future__ import annotations

import time
from contextlib import nullcontext
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


class GCPOTrainer(RRMTrainer):
    name = "gcpo"

    def __init__(self, config):
        pairs, rejected = read_preferences(config.data)
        ties = [p for p in pairs if p.winner == "tie"]
        rejected = rejected + [{"where": "pairs", "reason": f"{len(ties)} tie(s) skipped: a tie has no winner"}] \
            if ties else rejected
        super().__init__(config, [p for p in pairs if p.winner != "tie"], rejected)

    def train_step(self, step: int) -> dict[str, float]:
        cfg, g = self.config, self.config.gcpo
        pairs, n = self.step_items(step), g.num_trajectories
        requests = []
        for pair in pairs:
            winner, loser = pair.ordered()
            requests += [build_request(pair.instruction, pair.source, winner, cfg.format)] * n
            requests += [build_request(pair.instruction, pair.source, loser, cfg.format)] * n
        self.model.eval()
        began = time.perf_counter()
        chunks = [generate(self.model, self.processor, requests[i:i + cfg.train.micro_batch_size],
                           g.max_new_tokens, g.temperature, self.device)
                  for i in range(0, len(requests), cfg.train.micro_batch_size)]
        sample_seconds = time.perf_counter() - began
        texts = [t for _, answers in chunks for t in answers.texts]
        scores = torch.tensor([trajectory_score(t, cfg.format) for t in texts], dtype=torch.float64)
        grouped = scores.view(len(pairs), 2, n)  # [pair, winner/loser, trajectory]
        adv_w, adv_l, reward_w, reward_l = gcpo_advantages(grouped[:, 0], grouped[:, 1], g.tie_value, g.eps)
        advantages = torch.stack([adv_w, adv_l], dim=1).reshape(-1)
        with torch.no_grad():
            old = [answer_logprobs(self.model, prompts, answers) for prompts, answers in chunks]
        self.model.train()
        tokens = sum(int(a.mask.sum()) for _, a in chunks)
        denominator = tokens if g.aggregation == "token_mean" else len(texts)
        stats: dict[str, list] = {"loss": [], "clip_fraction": [], "grad_norm": []}
        for _ in range(g.updates_per_batch):
            total, offset = 0.0, 0
            for index, ((prompts, answers), logp_old) in enumerate(zip(chunks, old)):
                rows = answers.ids.shape[0]
                last = index == len(chunks) - 1
                with nullcontext() if last else self.accelerator.no_sync(self.model):
                    logp = answer_logprobs(self.model, prompts, answers)
                    loss, parts = clipped_surrogate(logp, logp_old, advantages[offset:offset + rows].to(self.device),
                                                    answers.mask, g.clip_low, g.clip_high, g.aggregation, denominator)
                    self.accelerator.backward(loss)
                total += float(loss.detach())
                stats["clip_fraction"].append(parts["clip_fraction"])
                offset += rows
            stats["loss"].append(total)
            stats["grad_norm"].append(self.clip_and_step())
        valid = torch.isfinite(scores)
        means = torch.nanmean(grouped, dim=-1)  # per pair and side, over valid trajectories
        return {"loss": stats["loss"][0], "loss_last": stats["loss"][-1], "grad_norm": stats["grad_norm"][-1],
                "clip_fraction": sum(stats["clip_fraction"]) / len(stats["clip_fraction"]),
                "valid_fraction": float(valid.double().mean()),
                "reward_winner": float(reward_w.mean()), "reward_loser": float(reward_l.mean()),
                "score_winner": _finite_mean(grouped[:, 0]), "score_loser": _finite_mean(grouped[:, 1]),
                "pair_accuracy": float(((means[:, 0] > means[:, 1]).double()).mean()),
                "sampled_tokens": float(tokens), "sample_tokens_per_s": tokens / max(sample_seconds, 1e-9)}


def _finite_mean(values: torch.Tensor) -> float:
    finite = values[torch.isfinite(values)]
    return float(finite.mean()) if finite.numel() else float("nan")
