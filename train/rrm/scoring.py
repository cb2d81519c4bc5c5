"""Reading a score out of an RRM reply: the parsed final score, or its log-prob expectation when the score is one
token and the reply carries log-probs (``E[s] = Σ p(s)·s / Σ p(s)`` over the score tokens among the top-k
alternatives at that position, :func:`editkit.mllm.logprob_scores.expected_score`)."""
from __future__ import annotations

import math
from typing import Optional

from editkit.mllm.logprob_scores import expected_score
from editkit.mllm.messages import Response
from editkit.mllm.structured import ParseError
from train.rrm.format import SCORE_FIELD, FormatConfig, parse_trajectory


def score_position(response: Response) -> Optional[int]:
    """Index of the generated token that holds the final score's digits (None if they span several tokens)."""
    if not response.logprobs:
        return None
    pieces = [t.token for t in response.logprobs]
    joined = "".join(pieces)
    matches = list(SCORE_FIELD.finditer(joined))
    if not matches:
        return None
    start, end = matches[-1].span(1)
    offset = 0
    for index, piece in enumerate(pieces):
        if offset <= start < offset + len(piece):
            stripped_start = offset + len(piece) - len(piece.lstrip())
            return index if stripped_start == start and offset + len(piece.rstrip()) == end else None
        offset += len(piece)
    return None


def read_score(response: Response, fmt: FormatConfig = FormatConfig()) -> tuple[float, Optional[str]]:
    """(score, None) or (NaN, reason)."""
    if not response.ok:
        return math.nan, f"request_failed: {response.error or 'empty answer'}"
    try:
        judgement = parse_trajectory(response.text, fmt)
    except ParseError as error:
        return math.nan, f"{error.reason}: {error}"
    position = score_position(response)
    if position is not None:
        expected = expected_score(response.logprobs[position], range(fmt.score_min, fmt.score_max + 1))
        if expected is not None:
            return expected, None
    return float(judgement.score), None


def pairwise_accuracy(client, pairs, fmt: FormatConfig = FormatConfig(), top_logprobs: int = 20,
                      max_tokens: int = 512) -> dict:
    """Greedy RRM scores of both images of each non-tie pair through ``client``; a pair counts 1 if the winner
    scores higher, 0.5 on a tie or when either score is unreadable, 0 otherwise."""
    decided = [p for p in pairs if p.winner != "tie"]
    requests = []
    for pair in decided:
        winner, loser = pair.ordered()
        requests += [build(pair, image, fmt, top_logprobs, max_tokens) for image in (winner, loser)]
    scores = [read_score(r, fmt)[0] for r in client.generate(requests)]
    credit = []
    for k in range(len(decided)):
        w, l = scores[2 * k], scores[2 * k + 1]
        credit.append(0.5 if math.isnan(w) or math.isnan(l) or w == l else float(w > l))
    valid = sum(not math.isnan(s) for s in scores)
    return {"accuracy": sum(credit) / len(credit) if credit else math.nan, "pairs": len(decided),
            "valid_fraction": valid / len(scores) if scores else math.nan}


def build(pair, image, fmt, top_logprobs, max_tokens):
    from train.rrm.format import build_request

    return build_request(pair.instruction, pair.source, image, fmt, max_tokens=max_tokens, temperature=0.0,
                         top_logprobs=top_logprobs)
