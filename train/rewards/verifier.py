"""Edit-R1-style verifier reward: the fraction of the instruction's principles that the edited image satisfies.

Two rounds through the shared MLLM client, both strict JSON (:func:`editkit.mllm.ask_json`, one repair round):
1. **decompose** the instruction (text only) into short, checkable principles: ``{"principles": ["...", ...]}``;
   besides what must change they include what must stay the same;
2. **verify** all principles of a sample in one request with the source and the edited image:
   ``{"verdicts": [{"principle": "...", "satisfied": "yes"|"no", "reason": "..."}, ...]}``, one per principle, in order.

``reward = #yes / #principles``. Principles, verdicts and the failure reason of every sample of the last call are
kept in ``reward.last_details`` for inspection and logging. A failed request, invalid JSON, or a verdict count that
does not match the principles gives NaN (masked, never a crash), counted in ``reward.failures`` by reason.
"""
from __future__ import annotations

from collections import Counter
from functools import lru_cache
from typing import Any

import torch

from editkit.errors import ConfigError
from editkit.mllm.config import ClientConfig
from editkit.needs import declare_needs
from train.rewards import RewardInputs, register_reward
from train.rewards.mllm import make_client, to_uint8

# the verifier's client unless rewards.options.verifier.client says otherwise (temperature 0: a reward must not depend
# on sampling luck)
VERIFIER_CLIENT = ClientConfig(backend="openai", timeout_s=60.0, retries=2, max_concurrency=8, cache_dir="",
                               max_tokens=512, temperature=0.0)


@lru_cache(maxsize=1)
def schemas():
    """The pydantic answer models (built on first use: pydantic is not needed to import the reward registry)."""
    from typing import Literal

    from pydantic import BaseModel, Field

    class Principles(BaseModel):
        principles: list[str] = Field(min_length=1)

    class Verdict(BaseModel):
        principle: str = ""
        satisfied: Literal["yes", "no"]
        reason: str = ""

    class Verdicts(BaseModel):
        verdicts: list[Verdict] = Field(min_length=1)

    return Principles, Verdicts


class VerifierReward:
    def __init__(self, client, prompt_version: str, max_principles: int):
        from editkit.mllm.prompts import load_prompt

        if max_principles < 1:
            raise ValueError(f"max_principles must be >= 1, got {max_principles}")
        self.client, self.max_principles = client, max_principles
        self.decompose_prompt = load_prompt("verifier_decompose", prompt_version)
        self.verify_prompt = load_prompt("verifier_verify", prompt_version)
        self.failures: Counter = Counter()  # reason -> count over the reward's life
        self.last_details: list[dict[str, Any]] = []  # per sample of the last call

    def __call__(self, inputs: RewardInputs) -> torch.Tensor:
        from editkit.mllm import Request, ask_json, user

        Principles, Verdicts = schemas()
        count = inputs.images.shape[0]
        values = torch.full((count,), float("nan"), dtype=torch.float64)
        self.last_details = [{"instruction": p, "principles": None, "verdicts": None, "error": None}
                             for p in inputs.prompts]
        decompose = [Request((user(self.decompose_prompt.render(instruction=p, max_principles=str(self.max_principles))),),
                             **self.decompose_prompt.stamp()) for p in inputs.prompts]
        asked, verify = [], []
        for index, result in enumerate(ask_json(self.client, decompose, Principles)):
            if result.value is None:
                self._fail(index, f"decompose_{result.status}", result.errors)
                continue
            principles = [p.strip() for p in result.value.principles if p.strip()][: self.max_principles]
            self.last_details[index]["principles"] = principles
            if not principles:
                self._fail(index, "decompose_empty", ["only blank principles"])
                continue
            try:
                images = (to_uint8(inputs.sources[index]), to_uint8(inputs.images[index]))
            except ValueError as error:
                self._fail(index, "bad_image", [str(error)])
                continue
            listed = "\n".join(f"{k + 1}. {p}" for k, p in enumerate(principles))
            text = self.verify_prompt.render(instruction=inputs.prompts[index], principles=listed)
            verify.append(Request((user(text, *images),), **self.verify_prompt.stamp()))
            asked.append(index)
        for index, result in zip(asked, ask_json(self.client, verify, Verdicts) if verify else []):
            if result.value is None:
                self._fail(index, f"verify_{result.status}", result.errors)
                continue
            verdicts = [v.model_dump() for v in result.value.verdicts]
            self.last_details[index]["verdicts"] = verdicts
            expected = len(self.last_details[index]["principles"])
            if len(verdicts) != expected:
                self._fail(index, "verdict_count", [f"{len(verdicts)} verdicts for {expected} principles"])
                continue
            values[index] = sum(v["satisfied"] == "yes" for v in verdicts) / expected
        return values

    def _fail(self, index: int, reason: str, errors: list[str]) -> None:
        self.failures[reason] += 1
        self.last_details[index]["error"] = f"{reason}: {errors[-1] if errors else ''}"


@register_reward("verifier")
@declare_needs("source_image", "instruction")
def verifier(client: ClientConfig = VERIFIER_CLIENT, prompt_version: str = "v1", max_principles: int = 6,
             protocol: str = "checklist", score_min: int = 0, score_max: int = 10, top_logprobs: int = 20):
    """``client``: the verifier's MLLM client; ``prompt_version``: prompts/verifier_{decompose,verify}_<version>.txt.
    ``protocol``: ``checklist`` (decompose + verify, above) or ``rrm``: a trained reasoning reward model
    (:mod:`train.rewards.rrm_verifier`: its prompt ``train/rrm/prompts/rrm_<prompt_version>.txt``, scores in
    [score_min, score_max], log-prob expected score with ``top_logprobs`` > 0)."""
    if protocol == "rrm":
        from train.rrm.format import FormatConfig
        from train.rewards.rrm_verifier import RRMReward

        return RRMReward(make_client(client), FormatConfig(score_min, score_max, prompt_version), top_logprobs,
                         client.max_tokens)
    if protocol != "checklist":
        raise ConfigError(f"rewards.options.verifier.protocol must be 'checklist' or 'rrm', got {protocol!r}")
    return VerifierReward(make_client(client), prompt_version, max_principles)
