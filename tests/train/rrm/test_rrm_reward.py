"""The RRM as `rewards.weights.verifier` (protocol rrm): through a served copy (scripted server, log-prob
expectation) and through the transformers backend rewarding a step of the editor trainer."""
from __future__ import annotations

import json
import math

import pytest
import torch

from tests.support.numerics import assert_close
from tests.support.reward_inputs import random_reward_inputs
from tests.support.scripted_server import ScriptedServer, completion
from train.rewards import build_reward
from train.rrm.format import render_trajectory

TRAJECTORY = render_trajectory({"keep": ["face"], "follow": ["hat red"], "quality": []},
                               [{"group": "keep", "principle": "face", "satisfied": "yes"},
                                {"group": "follow", "principle": "hat red", "satisfied": "no"}], 6)


def batch(prompts):
    return random_reward_inputs(prompts, 28)


def with_logprobs(text):
    """One token per character; at the score digit 60% "6", 40% "8"."""
    tokens = []
    for position, char in enumerate(text):
        if text[position - 8:position] == '"score":':
            tokens.append((char, math.log(0.6), [("6", math.log(0.6)), ("8", math.log(0.4))]))
        else:
            tokens.append((char, 0.0, [(char, 0.0)]))
    return completion(text, tokens)


def test_served_rrm_expected_score_parsed_score_and_failures():
    def handler(request):
        if '"with logprobs"' in request.text:
            return with_logprobs(TRAJECTORY)
        if '"parsed"' in request.text:
            return "Sure: " + TRAJECTORY
        return json.dumps({"principles": {"keep": ["x"]}, "verdicts": [], "score": 3})

    with ScriptedServer(handler) as server:
        client = {"endpoint": server.url, "retries": 0, "timeout_s": 5}
        reward = build_reward("verifier", {"client": client, "protocol": "rrm", "top_logprobs": 0})
        values = reward(batch(["parsed", "broken"]))
        assert "keep (what must stay unchanged)" in server.requests[0].text and server.requests[0].n_images == 2
        reward_lp = build_reward("verifier", {"client": client, "protocol": "rrm"})
        expected = reward_lp(batch(["with logprobs"]))
        assert server.requests[-1].wants_logprobs == 20
    assert_close(values[0], 0.6, accumulations=1, why="6 / 10: one rounding")
    assert math.isnan(values[1].item())
    assert reward.failures == {"schema": 1} and reward.last_details[1]["error"].startswith("schema")
    assert_close(expected, (6 * 0.6 + 8 * 0.4) / 10, accumulations=4, growth="linear",
                 why="a probability-weighted mean of 2 scores / 10: 4 roundings")


def test_unknown_protocol_is_an_error():
    with pytest.raises(ValueError, match="protocol"):
        build_reward("verifier", {"client": {"backend": "none"}, "protocol": "pairwise"})


def test_trained_rrm_rewards_the_editor_trainer(trained_rrm_dir, tiny_kontext_dir, edit_dataset_dir, tmp_path):
    from train.config import load_config
    from train.trainers import TRAINERS

    options = {"client": {"backend": "transformers", "model": str(trained_rrm_dir), "max_tokens": 60},
               "protocol": "rrm"}
    config = load_config(None, [
        f"model.path={tiny_kontext_dir}", f"data.dataset={edit_dataset_dir}", f"output_dir={tmp_path / 'run'}",
        "model.max_sequence_length=32", "lora.rank=4", "lora.alpha=4", "data.resolution=[32, 32]", "data.eval_size=2",
        "sampler.num_steps=2", "sampler.sde_window=[0, 2]", "train.max_steps=1", "train.groups_per_step=1",
        "train.group_size=2", "train.micro_batch_size=2", "eval.every=0", "checkpoint.every=0",
        "logging.tensorboard=false", "logging.progress=false", "objective.regularizer.enabled=false",
        "rewards.weights={verifier: 1.0}", f"rewards.options={{verifier: {json.dumps(options)}}}"])
    trainer = TRAINERS.get("nft")(config)
    trainer.fit()
    reward = trainer.rewards.functions["verifier"]
    # The small RRM learned the format from 8 trajectories: on the editor's fresh rollouts a reply can still break
    # the schema (which thread counts and test order decide). Each reply is either a valid trajectory with its score
    # or a schema failure recorded as such, and the logged reward is the mean of the valid scores.
    details = reward.last_details
    assert len(details) == 2 and all(d["reply"] for d in details)
    valid = [d["score"] for d in details if d["error"] is None]
    assert all(d["error"].startswith("schema") for d in details if d["error"] is not None), details
    assert all(0 <= s <= 10 for s in valid)
    logged = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[0])
    if valid:
        assert_close(logged["reward_verifier"], sum(valid) / len(valid) / 10, dtype=torch.float32,
                     accumulations=len(valid) + 1, why="the logged float32 mean of the valid scores / 10")
