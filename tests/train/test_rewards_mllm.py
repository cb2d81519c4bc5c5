"""MLLM judge and verifier rewards against the scripted chat-completions server (real HTTP, real client)."""
from __future__ import annotations

import json
import math

import pytest
import torch

from tests.support.numerics import assert_close
from tests.support.reward_inputs import random_reward_inputs
from tests.support.scripted_server import Reply, ScriptedServer, completion, free_port
from train.rewards import WeightedRewards, build_reward


def batch(prompts):
    return random_reward_inputs(prompts, 8)


def mllm_reward(server, **options):
    return build_reward("mllm", {"client": {"endpoint": server.url, "retries": 0, "timeout_s": 5}, **options})


def test_mllm_scores_logprob_expectation_parsed_number_and_failures():
    # "7" with log-probs: E = (7·0.5 + 8·0.3) / (0.5 + 0.3) over the score tokens ("x" is not a score)
    with_logprobs = completion("7", [("7", math.log(0.5), [("7", math.log(0.5)), (" 8", math.log(0.3)),
                                                           ("x", math.log(0.2))])])
    answers = {"a": with_logprobs, "b": completion("Score: 4"), "c": "I like it", "d": "15", "e": Reply(status=400)}

    def handler(request):
        return answers[request.text.split('"')[1]]

    with ScriptedServer(handler) as server:
        reward = mllm_reward(server)
        values = reward(batch(["a", "b", "c", "d", "e", "b"]))
        assert server.requests[0].n_images == 2 and server.requests[0].wants_logprobs == 20
    expected = (7 * 0.5 + 8 * 0.3) / 0.8 / 10
    assert_close(values[0], expected, accumulations=6, growth="linear",
                 why="a probability-weighted mean of 2 scores, renormalised, / 10: a few roundings")
    assert_close(values[[1, 5]], [0.4, 0.4], accumulations=1, why="4 / 10: one rounding")
    assert torch.isnan(values[2:5]).all()
    assert reward.failures == {"no_number": 1, "out_of_range": 1, "request_failed": 1}
    assert reward.last_errors[0] is None and reward.last_errors[2].startswith("no_number")


def test_mllm_ten_split_into_digits_uses_parsed_number_and_custom_range():
    # digit-wise tokenizers send "10" as "1", "0": one position cannot hold the score -> the parsed number
    body = completion("10", [("1", 0.0, [("1", 0.0)]), ("0", 0.0, [("0", 0.0)])])
    with ScriptedServer(lambda request: body) as server:
        assert mllm_reward(server)(batch(["x"])).tolist() == [1.0]
    with ScriptedServer(lambda request: "3") as server:  # range 1-5: (3 - 1) / 4
        reward = mllm_reward(server, score_min=1, score_max=5)
        assert reward(batch(["x"])).tolist() == [0.5]
        assert "from 1 to 5" in server.requests[0].text


def test_nan_image_is_masked_without_a_request():
    inputs = batch(["a", "b"])
    inputs.images[1, 0, 0, 0] = float("nan")
    with ScriptedServer(lambda request: "6") as server:
        reward = mllm_reward(server)
        values = reward(inputs)
        assert server.count == 1
    assert_close(values[0], 0.6, accumulations=1, why="6 / 10: one rounding")
    assert math.isnan(values[1].item())
    assert reward.failures == {"bad_image": 1}


@pytest.mark.parametrize("name", ["mllm", "verifier"])
def test_server_down_fails_at_construction(name):
    with pytest.raises(Exception, match="127.0.0.1"):
        build_reward(name, {"client": {"endpoint": f"http://127.0.0.1:{free_port()}/v1", "retries": 0, "timeout_s": 2}})


def verifier_handler(request):
    text = request.text
    if "principles a correct result" in text:  # round 1: decompose
        if "the sky" in text:
            return "no JSON here"
        if "the hat" in text:
            return json.dumps({"principles": ["hat is red", "face unchanged", "background unchanged"]})
        return json.dumps({"principles": ["car removed", "road unchanged"]})
    if "the hat" in text:  # round 2: verify
        return json.dumps({"verdicts": [{"principle": "hat is red", "satisfied": "yes", "reason": "red"},
                                        {"principle": "face unchanged", "satisfied": "no", "reason": "smiles"},
                                        {"principle": "background unchanged", "satisfied": "yes", "reason": ""}]})
    return json.dumps({"verdicts": [{"principle": "car removed", "satisfied": "yes"}]})  # one verdict too few


def test_verifier_fraction_details_and_failures():
    with ScriptedServer(verifier_handler) as server:
        reward = build_reward("verifier", {"client": {"endpoint": server.url, "retries": 0, "timeout_s": 5}})
        values = reward(batch(["make the hat red", "remove the car", "make the sky green"]))
    assert_close(values[0], 2 / 3, accumulations=3, why="2 of 3 verdicts: a mean of 3")
    assert torch.isnan(values[1:]).all()
    details = reward.last_details
    assert details[0]["principles"] == ["hat is red", "face unchanged", "background unchanged"]
    assert [v["satisfied"] for v in details[0]["verdicts"]] == ["yes", "no", "yes"]
    assert details[0]["error"] is None
    assert details[1]["error"].startswith("verdict_count") and len(details[1]["verdicts"]) == 1
    assert details[2]["principles"] is None and details[2]["error"].startswith("decompose_fallback:no_json")
    assert reward.failures == {"verdict_count": 1, "decompose_fallback:no_json": 1}


def test_weighted_rewards_builds_both_from_options():
    with ScriptedServer(lambda request: "5" if "Rate from" in request.text else verifier_handler(request)) as server:
        options = {name: {"client": {"endpoint": server.url, "retries": 0}} for name in ("mllm", "verifier")}
        mix = WeightedRewards({"mllm": 1.0, "verifier": 2.0}, options)
        total, parts = mix(batch(["make the hat red"]))
    assert parts["mllm"].tolist() == [0.5]
    assert_close(total, 0.5 + 2 * 2 / 3, accumulations=3, why="1 × 0.5 + 2 × 2/3: a weighted sum of 2 rewards")
