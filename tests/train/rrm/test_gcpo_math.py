"""GCPO's rewards, advantages and clipped surrogate against brute-force loops and closed forms."""
from __future__ import annotations

import math

import pytest
import torch

from tests.support.numerics import assert_close
from train.rrm.gcpo import GCPOConfig, clipped_surrogate, contrastive_rewards, gcpo_advantages, group_normalise


def brute_rewards(winner, loser, tie):
    n = len(winner)
    rw, rl = [], []
    for j in range(n):
        if math.isnan(winner[j]):
            rw.append(0.0)
        else:
            rw.append(sum(1.0 if winner[j] > s else tie if winner[j] == s else 0.0 for s in loser) / n)
        if math.isnan(loser[j]):
            rl.append(0.0)
        else:
            rl.append(sum(1.0 if loser[j] < s else tie if loser[j] == s else 0.0 for s in winner) / n)
    return rw, rl


@pytest.mark.parametrize("tie", [0.0, 0.5])
def test_rewards_match_brute_force_with_ties_and_invalid(tie):
    generator = torch.Generator().manual_seed(0)
    for _ in range(20):
        winner = torch.randint(0, 4, (6,), generator=generator).double()
        loser = torch.randint(0, 4, (6,), generator=generator).double()
        winner[torch.rand(6, generator=generator) < 0.15] = float("nan")
        loser[torch.rand(6, generator=generator) < 0.15] = float("nan")
        rw, rl = contrastive_rewards(winner, loser, tie)
        bw, bl = brute_rewards(winner.tolist(), loser.tolist(), tie)
        assert_close(rw, bw, accumulations=6, why="a fraction of 6 comparisons (float64)")
        assert_close(rl, bl, accumulations=6, why="a fraction of 6 comparisons (float64)")


def test_rewards_closed_forms_and_batch_dims():
    # every winner trajectory above every loser trajectory: all rewards 1
    rw, rl = contrastive_rewards(torch.tensor([[7.0, 8, 9]]), torch.tensor([[1.0, 2, 3]]))
    assert rw.tolist() == [[1, 1, 1]] and rl.tolist() == [[1, 1, 1]]
    # winner [1,2,3] vs loser [2,2,2]: strict -> w = [0, 0, 1], l_j = #{w > 2}/3 = 1/3
    rw, rl = contrastive_rewards(torch.tensor([1.0, 2, 3]), torch.tensor([2.0, 2, 2]))
    assert_close(rw, [0, 0, 1], accumulations=3, why="a fraction of 3 comparisons")
    assert_close(rl, [1 / 3] * 3, accumulations=3, why="a fraction of 3 comparisons")
    rw, rl = contrastive_rewards(torch.tensor([1.0, 2, 3]), torch.tensor([2.0, 2, 2]), tie_value=0.5)
    assert_close(rw, [0, 0.5, 1], accumulations=3, why="a fraction of 3 comparisons, ties 0.5")
    assert_close(rl, [0.5] * 3, accumulations=3, why="a fraction of 3 comparisons, ties 0.5")
    batched = contrastive_rewards(torch.tensor([[1.0, 2, 3], [7.0, 8, 9]]), torch.tensor([[2.0, 2, 2], [1.0, 2, 3]]))
    assert_close(batched[0][0], [0, 0, 1], accumulations=3, why="a fraction of 3 comparisons")
    assert batched[1][1].tolist() == [1, 1, 1]


def test_normalisation_is_per_group():
    adv_w, adv_l, rw, rl = gcpo_advantages(torch.tensor([1.0, 2, 3, 4]), torch.tensor([2.0, 2, 2, 9]), eps=1e-12)
    for adv, raw in ((adv_w, rw), (adv_l, rl)):
        mean = sum(raw.tolist()) / 4
        std = math.sqrt(sum((r - mean) ** 2 for r in raw.tolist()) / 4)
        assert_close(adv, [(r - mean) / (std + 1e-12) for r in raw.tolist()], accumulations=2 * 4, growth="linear",
                     why="(r - mean) / (std + eps) over a group of 4: a mean and a variance of 4 terms")
    assert group_normalise(torch.full((5,), 0.3)).abs().max() == 0  # one group all equal: no signal


def brute_surrogate(logp, old, adv, mask, lo, hi, aggregation):
    per_seq, total, count = [], 0.0, 0
    for i in range(len(logp)):
        terms = []
        for t in range(len(logp[i])):
            if mask[i][t]:
                r = math.exp(logp[i][t] - old[i][t])
                terms.append(-min(r * adv[i], min(max(r, 1 - lo), 1 + hi) * adv[i]))
        total += sum(terms)
        count += len(terms)
        per_seq.append(sum(terms) / max(len(terms), 1))
    return total / count if aggregation == "token_mean" else sum(per_seq) / len(per_seq)


@pytest.mark.parametrize("aggregation", ["token_mean", "sequence_mean"])
def test_clipped_surrogate_matches_brute_force(aggregation):
    generator = torch.Generator().manual_seed(1)
    logp = -torch.rand(5, 7, generator=generator, dtype=torch.float64) * 3
    old = logp + (torch.rand(5, 7, generator=generator, dtype=torch.float64) - 0.5)  # ratios well outside the clip
    adv = torch.randn(5, generator=generator, dtype=torch.float64)
    mask = torch.ones(5, 7, dtype=torch.bool)
    for i, length in enumerate([7, 3, 5, 1, 6]):
        mask[i, length:] = False
    loss, stats = clipped_surrogate(logp, old, adv, mask, 0.2, 0.28, aggregation)
    expected = brute_surrogate(logp.tolist(), old.tolist(), adv.tolist(), mask.tolist(), 0.2, 0.28, aggregation)
    assert_close(loss, expected, accumulations=5 * 7, growth="linear",
                 why="float64 means over up to 5 × 7 masked tokens, the same formula written as loops")
    assert 0 < stats["clip_fraction"] < 1


def test_clip_stops_the_gradient_outside_the_trust_region():
    logp = torch.tensor([[math.log(2.0)]], requires_grad=True)  # ratio 2 against old log-prob 0
    loss, _ = clipped_surrogate(logp, torch.zeros(1, 1), torch.tensor([1.0]), torch.ones(1, 1, dtype=torch.bool))
    loss.backward()
    assert_close(loss, -1.2, accumulations=1, why="-(1 + 0.2) × 1: one float32 rounding")
    assert logp.grad.item() == 0.0  # clipped at 1 + 0.2, no push further
    logp = torch.tensor([[math.log(2.0)]], requires_grad=True)  # negative advantage: the unclipped term is min
    loss, _ = clipped_surrogate(logp, torch.zeros(1, 1), torch.tensor([-1.0]), torch.ones(1, 1, dtype=torch.bool))
    loss.backward()
    assert_close(loss, 2.0, accumulations=2, why="exp(log 2) × -(-1): exp and log round once each")
    assert_close(logp.grad, 2.0, accumulations=2, why="d(ρ)/d(logp) = ρ = exp(log 2)")


@pytest.mark.parametrize("aggregation", ["token_mean", "sequence_mean"])
def test_on_policy_gradient_equals_policy_gradient(aggregation):
    # linear softmax policy: logits_t = θ x_t; ∇_θ log π(a_t) = (onehot(a_t) - π_t) x_tᵀ in closed form
    generator = torch.Generator().manual_seed(2)
    vocab, dim, trajectories, length = 5, 3, 4, 6
    theta = torch.randn(vocab, dim, generator=generator, dtype=torch.float64, requires_grad=True)
    x = torch.randn(trajectories, length, dim, generator=generator, dtype=torch.float64)
    actions = torch.randint(0, vocab, (trajectories, length), generator=generator)
    mask = torch.ones(trajectories, length, dtype=torch.bool)
    mask[1, 4:] = False
    mask[3, 2:] = False
    adv = torch.randn(trajectories, generator=generator, dtype=torch.float64)
    logits = torch.einsum("vd,tld->tlv", theta, x)
    logp = torch.log_softmax(logits, -1).gather(-1, actions.unsqueeze(-1)).squeeze(-1)
    loss, stats = clipped_surrogate(logp, logp.detach(), adv, mask, aggregation=aggregation)
    assert_close(stats["ratio_mean"], 1.0, dtype=torch.float64, accumulations=trajectories * length,
                 why="a mean over the masked tokens of exp(0) = 1")
    assert stats["clip_fraction"] == 0.0
    loss.backward()
    probs = torch.softmax(logits.detach(), -1)
    expected = torch.zeros(vocab, dim, dtype=torch.float64)
    for i in range(trajectories):
        tokens = int(mask[i].sum())
        weight = 1.0 / int(mask.sum()) if aggregation == "token_mean" else 1.0 / (tokens * trajectories)
        for t in range(tokens):
            onehot = torch.zeros(vocab, dtype=torch.float64)
            onehot[actions[i, t]] = 1
            expected -= weight * adv[i] * torch.outer(onehot - probs[i, t], x[i, t])
    assert_close(theta.grad, expected, accumulations=trajectories * length * vocab, growth="linear",
                 why="autograd vs the closed form in float64: a sum over 4 × 6 tokens of softmaxes over 5")


def test_config_rejects_bad_knobs():
    for bad in ({"tie_value": 0.3}, {"aggregation": "sum"}, {"num_trajectories": 1}, {"eps": 0}):
        with pytest.raises(ValueError):
            GCPOConfig(**bad)
