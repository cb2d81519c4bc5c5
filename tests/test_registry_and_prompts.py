"""The extension registry and content-versioned prompts (a prompt edit can never hit stale cache entries)."""
from __future__ import annotations

from typing import Iterator

import pytest

from editkit.errors import UnknownName, UserError
from editkit.mllm import Backend, Client, ClientConfig, Request, Response, user
from editkit.mllm.prompts import load_prompt
from editkit.registry import Registry


def test_registry_registers_lists_and_refuses_unknown_names():
    registry: Registry = Registry("widget", lazy={"json": "json:dumps", "lazy_module": "editkit.scores"})

    @registry.register("square")
    def square(x):
        return x * x

    assert registry.names() == ["json", "lazy_module", "square"] and "json" in registry
    assert registry.get("square") is square and registry["square"](3) == 9
    import json

    assert registry.get("json") is json.dumps  # imported on first lookup
    with pytest.raises(UnknownName) as info:
        registry.get("circle")
    assert str(info.value) == "unknown widget 'circle'; choose one of: json, lazy_module, square"
    assert isinstance(info.value, UserError) and isinstance(info.value, KeyError)
    with pytest.raises(UnknownName, match="lazy_module"):  # a module that does not register the name
        registry.get("lazy_module")
    assert registry.pop("square") is square and "square" not in registry


def test_every_project_registry_lists_its_built_ins_without_importing_them():
    from benchmarks.build import READERS
    from curate.sources.presets import PRESETS
    from curate.sources import SOURCES
    from editkit.mllm.backends import BACKENDS
    from train.adapters import ADAPTERS
    from train.rewards import REWARDS
    from train.trainers import TRAINERS

    assert BACKENDS.names() == ["none", "openai", "transformers"]
    assert ADAPTERS.names() == ["flux2", "flux_kontext", "qwen_image_21", "qwen_image_edit"] and TRAINERS.names() == ["grpo", "nft"]
    assert SOURCES.names() == ["folder", "hf", "preset", "sample"] and READERS.names() == ["compbench", "gedit", "imgedit"]
    assert {"mllm", "verifier", "pixel_consistency", "edit_region"} <= set(REWARDS.names())
    assert {"magicbrush", "omniedit"} <= set(PRESETS.names())
    with pytest.raises(UnknownName, match="unknown MLLM backend 'vllm'; choose one of: none, openai, transformers"):
        BACKENDS.get("vllm")


class CountingBackend(Backend):
    name = "counting"

    def __init__(self, config):
        super().__init__(config)
        self.sent = 0

    def generate(self, requests) -> Iterator[tuple[int, Response]]:
        for index, _ in enumerate(requests):
            self.sent += 1
            yield index, Response(text=f"answer {self.sent}")


def test_editing_a_prompt_file_misses_the_cache_and_the_same_prompt_hits(tmp_path):
    prompts = tmp_path / "prompts"
    prompts.mkdir()
    (prompts / "judge_v1.txt").write_text("Rate the edit: $instruction")
    config = ClientConfig(backend="counting", model="m", cache_dir=str(tmp_path / "cache"))

    def ask(client):
        prompt = load_prompt("judge", "v1", prompts)
        return client.generate_one(Request((user(prompt.render(instruction="x")),), **prompt.stamp()))

    backend = CountingBackend(config)
    with Client(config, backend=backend) as client:
        first = ask(client)
        again = ask(client)  # same prompt content: a hit
        assert again.cached and again.text == first.text and backend.sent == 1
        (prompts / "judge_v1.txt").write_text("Rate the edit carefully: $instruction")
        edited = ask(client)
        assert not edited.cached and backend.sent == 2
        (prompts / "judge_v1.txt").write_text("Rate the edit: $instruction")  # back to the first version: a hit
        assert ask(client).cached and backend.sent == 2


def test_prompt_hash_is_in_the_request_key_even_when_the_text_is_equal():
    from editkit.mllm.cache import request_key

    base = Request((user("same text"),), prompt_version="judge_v1")
    a = Request((user("same text"),), prompt_version="judge_v1", prompt_sha="a" * 64)
    b = Request((user("same text"),), prompt_version="judge_v1", prompt_sha="b" * 64)
    keys = {request_key("openai", "m", r) for r in (base, a, b)}
    assert len(keys) == 3


def test_every_prompt_is_in_the_store_and_the_rewards_stamp_their_requests():
    import torch

    from benchmarks.judge import Judge
    from train.rewards import RewardInputs
    from train.rewards.mllm import MLLMReward

    for name in ("rewrite", "mllm_reward", "verifier_decompose", "verifier_verify", "gedit_sc", "gedit_pq",
                 "imgedit_rubric"):
        assert load_prompt(name, "v1").sha
    reward = MLLMReward(client=None, prompt_version="v1", score_min=0, score_max=10, top_logprobs=0)
    request = reward.request("make it red", torch.zeros(3, 4, 4), torch.zeros(3, 4, 4))
    assert request.prompt_sha == load_prompt("mllm_reward", "v1").sha and "from 0 to 10" in request.messages[0].text
    judge = Judge("gedit", complete=lambda requests: [], model="m")
    assert judge.prompt_sha and judge.prompt_version.endswith(judge.prompt_sha[:8])
    assert RewardInputs  # the reward module imports cleanly
