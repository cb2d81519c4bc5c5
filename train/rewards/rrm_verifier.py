"""The trained RRM as the editor trainer's reward (``rewards.weights.verifier`` with ``protocol: rrm``).

One request per edited image, in the RRM's own format (the prompt it was trained with), through the shared MLLM
client: ``backend: transformers`` with ``model:`` an RRM run's ``model/`` directory, or ``backend: openai`` with a
vLLM-served copy of it. Reward = (score - score_min) / (score_max - score_min), the score being the log-prob
expectation at the score token when log-probs are available (:func:`train.rrm.scoring.read_score`). An unreadable
reply is NaN (masked out of the advantages), counted in ``failures`` by reason.
"""
from __future__ import annotations

from collections import Counter

import torch

from train.rewards.mllm import to_uint8
from train.rrm.format import FormatConfig, build_request
from train.rrm.scoring import read_score


class RRMReward:
    def __init__(self, client, fmt: FormatConfig, top_logprobs: int = 20, max_tokens: int = 512):
        self.client, self.fmt, self.top_logprobs, self.max_tokens = client, fmt, top_logprobs, max_tokens
        self.failures: Counter = Counter()
        self.last_details: list[dict] = []

    def __call__(self, inputs) -> torch.Tensor:

        count = inputs.images.shape[0]
        values = torch.full((count,), float("nan"), dtype=torch.float64)
        self.last_details = [{"instruction": p, "score": None, "error": None, "reply": None} for p in inputs.prompts]
        requests, asked = [], []
        for index in range(count):
            try:
                images = to_uint8(inputs.sources[index]), to_uint8(inputs.images[index])
            except ValueError as error:
                self._fail(index, f"bad_image: {error}")
                continue
            requests.append(build_request(inputs.prompts[index], *images, self.fmt, max_tokens=self.max_tokens,
                                          temperature=0.0, top_logprobs=self.top_logprobs))
            asked.append(index)
        span = self.fmt.score_max - self.fmt.score_min
        for index, response in zip(asked, self.client.generate(requests) if requests else []):
            score, error = read_score(response, self.fmt)
            self.last_details[index]["reply"] = response.text
            if error is not None:
                self._fail(index, error)
                continue
            self.last_details[index]["score"] = score
            values[index] = (score - self.fmt.score_min) / span
        return values

    def _fail(self, index: int, reason: str) -> None:
        self.failures[reason.split(":")[0]] += 1
        self.last_details[index]["error"] = reason
