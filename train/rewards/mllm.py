"""MLLM judge reward: a vision-language model scores each edit (source + edited image + instruction) from 0 to 10.

The judge is asked for the integer score alone. When the backend returns log-probs, the reward is the
probability-weighted expectation over the score tokens at the position where the score is stated
(:func:`editkit.mllm.logprob_scores.expected_score`): smoother than the sampled number. A multi-token score
("10" split into "1", "0" by digit-wise tokenizers) cannot be read from one position, so then the parsed number is
used. The score is normalised to [0, 1] over ``[score_min, score_max]``. A failed request or an unparseable /
out-of-range answer gives NaN for that sample (masked out of the advantages, never a crash) and is counted in
``reward.failures`` by reason. The client probes the endpoint at construction: a down server fails fast.
"""
from __future__ import annotations

import re
from collections import Counter

import torch

from editkit.mllm.config import ClientConfig
from editkit.needs import declare_needs
from train.rewards import RewardInputs, register_reward

NUMBER = re.compile(r"-?\d+(?:\.\d+)?")
# the judge's client unless rewards.options.mllm.client says otherwise; temperature 0: a reward must not depend on
# sampling luck; 8 tokens: the answer is one integer
JUDGE_CLIENT = ClientConfig(backend="openai", timeout_s=60.0, retries=2, max_concurrency=8, cache_dir="",
                            max_tokens=8, temperature=0.0)


def make_client(config: ClientConfig):
    """The shared MLLM client (imported here, not at module import: the trainer's CLI must start fast)."""
    from editkit.mllm import Client

    return Client(config)


def to_uint8(image: torch.Tensor):
    """(3, H, W) float in [0, 1] -> HxWx3 uint8 array (what the message model encodes as PNG)."""
    if not torch.isfinite(image).all():
        raise ValueError("image has non-finite values")
    return (image.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()


def parse_score(response, low: int, high: int) -> float:
    """A :class:`Response` -> the judge's score in [low, high]; ValueError with the reason otherwise."""
    from editkit.mllm.logprob_scores import expected_score, first_score_position

    if not response.ok:
        raise ValueError(f"request_failed: {response.error or 'empty answer'}")
    match = NUMBER.search(response.text)
    if match is None:
        raise ValueError(f"no_number: {response.text!r:.120}")
    number = float(match.group(0))
    if not (low <= number <= high):
        raise ValueError(f"out_of_range: {number} not in [{low}, {high}]")
    scores = range(low, high + 1)
    if response.logprobs:
        position = first_score_position(response.logprobs, scores)
        if position is not None and response.logprobs[position].token.strip() == match.group(0):
            expected = expected_score(response.logprobs[position], scores)
            if expected is not None:
                return expected
    return number


class MLLMReward:
    def __init__(self, client, prompt_version: str, score_min: int, score_max: int, top_logprobs: int):
        from editkit.mllm.prompts import load_prompt

        if score_max <= score_min:
            raise ValueError(f"score_max ({score_max}) must be > score_min ({score_min})")
        self.client, self.prompt = client, load_prompt("mllm_reward", prompt_version)
        self.score_min, self.score_max, self.top_logprobs = score_min, score_max, top_logprobs
        self.failures: Counter = Counter()  # reason -> count over the reward's life (for logging)
        self.last_errors: list[str | None] = []  # per sample of the last call: None or the reason

    def request(self, instruction: str, source: torch.Tensor, image: torch.Tensor):
        from editkit.mllm import Request, user

        text = self.prompt.render(instruction=instruction, low=str(self.score_min), high=str(self.score_max))
        return Request((user(text, to_uint8(source), to_uint8(image)),), top_logprobs=self.top_logprobs,
                       **self.prompt.stamp())

    def __call__(self, inputs: RewardInputs) -> torch.Tensor:
        values = torch.full((inputs.images.shape[0],), float("nan"), dtype=torch.float64)
        self.last_errors = [None] * len(values)
        requests, asked = [], []
        for index, (prompt, source, image) in enumerate(zip(inputs.prompts, inputs.sources, inputs.images)):
            try:
                requests.append(self.request(prompt, source, image))
                asked.append(index)
            except ValueError as error:  # a NaN image: nothing to ask about
                self._fail(index, f"bad_image: {error}")
        for index, response in zip(asked, self.client.generate(requests) if requests else []):
            try:
                score = parse_score(response, self.score_min, self.score_max)
                values[index] = (score - self.score_min) / (self.score_max - self.score_min)
            except ValueError as error:
                self._fail(index, str(error))
        return values

    def _fail(self, index: int, reason: str) -> None:
        self.failures[reason.split(":")[0]] += 1
        self.last_errors[index] = reason


@register_reward("mllm")
@declare_needs("source_image", "instruction")
def mllm_judge(client: ClientConfig = JUDGE_CLIENT, prompt_version: str = "v1", score_min: int = 0,
               score_max: int = 10, top_logprobs: int = 20) -> MLLMReward:
    """``client``: the judge's MLLM client; ``prompt_version``: editkit/mllm/prompts/mllm_reward_<version>.txt."""
    return MLLMReward(make_client(client), prompt_version, score_min, score_max, top_logprobs)
