"""Scores from log-probs: the expectation of a numeric answer under the model's distribution over score tokens.

MLLM judges and rewards (CoCoEdit, Edit-R1) ask for a score such as "0-10" and read the probabilities of the score
tokens at the answer position instead of the sampled token: ``E[s] = Σ p(s)·s / Σ p(s)`` over the score tokens
found in the top-k alternatives. Smoother than the argmax, and meaningful even when the sampled text is off.
"""
from __future__ import annotations

import math
from typing import Iterable, Optional

from editkit.mllm.messages import TokenLogprob


def expected_score(token: TokenLogprob, scores: Iterable[int] = range(11)) -> Optional[float]:
    """Probability-weighted mean of the integer ``scores`` among ``token.top`` (None if none of them is there).

    Token strings are stripped (" 7" and "7" are the same score); if several alternatives decode to the same score
    their probabilities add up.
    """
    wanted = {str(s): s for s in scores}
    mass: dict[int, float] = {}
    for text, logprob in token.top or [(token.token, token.logprob)]:
        value = wanted.get(text.strip())
        if value is not None and math.isfinite(logprob):
            mass[value] = mass.get(value, 0.0) + math.exp(logprob)
    total = sum(mass.values())
    if total <= 0:
        return None
    return sum(value * p for value, p in mass.items()) / total


def first_score_position(logprobs: list[TokenLogprob], scores: Iterable[int] = range(11)) -> Optional[int]:
    """Index of the first generated token whose text is one of the scores (where the judge states its score)."""
    wanted = {str(s) for s in scores}
    return next((i for i, t in enumerate(logprobs) if t.token.strip() in wanted), None)
