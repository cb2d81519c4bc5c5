"""Reward calls overlapped with rollout (train/rollout/reward_thread.py, train/rollout/micro_batches.py) and
region-decoupled noise in the NFT trainer.

The overlapped scores must be exactly the sequential ones (same values, same order, NaNs where they were), a
reward exception must come back with its own message, and the reward thread must run calls one at a time in
submission order."""
from __future__ import annotations

import base64
import io
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.support.numerics import assert_close, assert_exact
from tests.support.scripted_server import Reply, ScriptedServer, completion
from train.rollout.micro_batches import merge_extras
from train.rollout.reward_thread import PendingRewards, RewardScheduler
from train.rewards import RewardInputs

REPO_CONFIG = Path(__file__).resolve().parents[2] / "train" / "configs" / "tiny_kontext.yaml"


def _edited_image(request) -> np.ndarray:
    """The second image of the judge request (the edited one), decoded from its data URL."""
    from PIL import Image

    urls = [part["image_url"]["url"] for message in request.body["messages"] if not isinstance(message["content"], str)
            for part in message["content"] if part.get("type") == "image_url"]
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(urls[1].split(",", 1)[1]))))


def image_judge(request):
    """A judge whose verdict depends on the edited image (so a reordering changes the values); every fifth image
    gets an unparseable answer (a NaN reward, masked out)."""
    total = int(_edited_image(request).astype(np.int64).sum())
    text = "no idea" if total % 5 == 0 else str(total % 11)
    return Reply(body=completion(text), delay_s=0.01)


def _config(model, dataset, out, *extra):
    from train.config import load_config

    return load_config(REPO_CONFIG, [
        f"model.path={model}", f"data.dataset={dataset}", f"output_dir={out}", "logging.progress=false",
        "logging.tensorboard=false", "train.max_steps=1", "eval.every=0", "checkpoint.every=0",
        "train.groups_per_step=2", "train.group_size=3", "train.micro_batch_size=2", *extra])


@pytest.fixture(scope="module")
def judge_server():
    with ScriptedServer(image_judge) as server:
        yield server


@pytest.fixture(scope="module")
def grpo_trainer(tiny_kontext_dir, edit_dataset_dir, judge_server, tmp_path_factory):
    from train.trainers.grpo import GRPOTrainer

    config = _config(tiny_kontext_dir, edit_dataset_dir, tmp_path_factory.mktemp("overlap"), "objective.name=grpo",
                     "objective.regularizer.enabled=false", "rewards.weights={pixel_consistency: 1.0, mllm: 0.5}",
                     f"rewards.options={{mllm: {{client: {{endpoint: '{judge_server.url}', retries: 0, timeout_s: 10}}}}}}")
    assert config.rewards.overlap  # the default
    trainer = GRPOTrainer(config)
    yield trainer
    trainer.reward_scheduler.close()


def _sample_and_score(trainer, step):
    batch = trainer.make_batch(step)
    trainer.sample(batch, step)
    pending = batch.samples.pending_rewards
    submitted = len(pending.futures) if pending is not None else 0
    total, parts = trainer.score(batch)
    return batch, total, parts, submitted


def test_overlapped_scores_equal_sequential(grpo_trainer, judge_server):
    trainer = grpo_trainer
    micro_batches = len(trainer.micro_batches(6))
    start = trainer.sampler.state_dict()
    overlapped = [_sample_and_score(trainer, step) for step in (1, 2)]
    assert all(result[3] == micro_batches == 3 for result in overlapped)  # one reward call per micro-batch
    overlapping = trainer.reward_scheduler
    trainer.reward_scheduler = RewardScheduler(trainer.rewards, overlap=False)
    try:
        trainer.sampler.load_state_dict(start)  # the same rows and seeds again
        before = judge_server.count
        batch = trainer.make_batch(1)
        trainer.sample(batch, 1)
        assert judge_server.count == before and batch.samples.pending_rewards is None  # nothing scored yet
        sequential = [(batch, *trainer.score(batch))]
        sequential.append(_sample_and_score(trainer, 2)[:3])
    finally:
        trainer.reward_scheduler = overlapping
    saw_nan = False
    for (b1, total1, parts1, _), (b2, total2, parts2) in zip(overlapped, sequential):
        assert b1.prompts == b2.prompts and torch.equal(b1.samples.images, b2.samples.images)
        assert_exact(total1, total2, equal_nan=True, why="the same images scored overlapped or in sequence")
        assert list(parts1) == list(parts2) == ["pixel_consistency", "mllm"]
        for name in parts1:
            assert_exact(parts1[name], parts2[name], equal_nan=True, why="the same images, the same reward")
        saw_nan |= bool(torch.isnan(total1).any())
        assert torch.isfinite(parts1["mllm"]).sum() >= 2  # the judge answered most images
    assert saw_nan  # the NaN path (full-mask row or unparseable verdicts) was exercised


def test_reward_exception_propagates_with_its_message(grpo_trainer):
    trainer, calls = grpo_trainer, []

    def exploding(inputs: RewardInputs):
        calls.append(len(inputs.prompts))
        if len(calls) == 2:
            raise RuntimeError("judge exploded on micro-batch 2")
        return trainer.rewards(inputs)

    overlapping = trainer.reward_scheduler
    trainer.reward_scheduler = RewardScheduler(exploding, overlap=True)
    try:
        batch = trainer.make_batch(3)
        began = time.monotonic()
        with pytest.raises(RuntimeError, match="^judge exploded on micro-batch 2$"):
            trainer.sample(batch, 3)  # fails fast during the rollout, or ...
            trainer.score(batch)  # ... at the join
        assert time.monotonic() - began < 120
        assert calls[:2] == [2, 2]
    finally:
        trainer.reward_scheduler.close()
        trainer.reward_scheduler = overlapping


def _inputs(count: int, offset: float) -> RewardInputs:
    return RewardInputs(torch.full((count, 3, 2, 2), offset), torch.zeros(count, 3, 2, 2),
                        torch.zeros(count, 2, 2, dtype=torch.bool), ["p"] * count, ["t"] * count)


def test_reward_thread_runs_calls_one_at_a_time_in_order():
    active, log, lock = [0], [], threading.Lock()

    def score(inputs):
        with lock:
            active[0] += 1
            assert active[0] == 1, "two reward calls ran at once"
        offset = float(inputs.images[0, 0, 0, 0])
        time.sleep(0.05 if offset == 0 else 0.001)  # the first call is the slowest: later ones must still wait
        log.append((offset, threading.current_thread().name))
        with lock:
            active[0] -= 1
        values = inputs.images[:, 0, 0, 0].double() + torch.arange(inputs.images.shape[0])
        return values, {"a": values, "b": -values}

    scheduler = RewardScheduler(score, overlap=True)
    try:
        pending = scheduler.start()
        for k, count in enumerate([2, 3, 1]):
            pending.submit(_inputs(count, float(k * 10)))
        total, parts = pending.join()
    finally:
        scheduler.close()
    assert [offset for offset, _ in log] == [0.0, 10.0, 20.0]
    assert all(name.startswith("reward") for _, name in log)  # not the caller's thread
    expected = torch.tensor([0, 1, 10, 11, 12, 20], dtype=torch.float64)
    assert torch.equal(total, expected) and torch.equal(parts["a"], expected) and torch.equal(parts["b"], -expected)
    assert RewardScheduler(score, overlap=False).start() is None


def test_submit_returns_before_the_reward_finishes_and_queued_calls_are_cancelled_on_error():
    release, started, hold = threading.Event(), threading.Event(), threading.Event()

    def score(inputs):
        which = float(inputs.images[0, 0, 0, 0])
        if which == 0:
            started.set()
            assert release.wait(10)
            raise ValueError("bad verdict")
        assert hold.wait(10)  # the second call is still running when the error is seen
        return inputs.images[:, 0, 0, 0].double(), {}

    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=1) as executor:
        pending = PendingRewards(executor, score)
        pending.submit(_inputs(1, 0.0))
        assert started.wait(10)  # the call runs while the caller goes on (the next rollout)
        pending.submit(_inputs(1, 1.0))
        pending.submit(_inputs(1, 2.0))  # queued behind both
        release.set()
        with pytest.raises(ValueError, match="^bad verdict$"):
            pending.join()
        assert pending.futures[2].cancelled() and not pending.futures[1].cancelled()
        with pytest.raises(ValueError, match="bad verdict"):  # a later submit fails fast as well
            pending.submit(_inputs(1, 3.0))
        hold.set()
    with pytest.raises(ValueError, match="no micro-batch"):
        PendingRewards(None, score).join()


def test_merge_extras_concatenates_per_sample_maps_and_keeps_shared_values():
    parts = [{"attention": torch.ones(2, 4), "attention_grid": (2, 2)},
             {"attention": torch.zeros(1, 4), "attention_grid": (2, 2)}]
    merged = merge_extras(parts)
    assert merged["attention"].shape == (3, 4) and merged["attention"][2].sum() == 0
    assert merged["attention_grid"] == (2, 2) and merge_extras([{}, {}]) == {}


@pytest.fixture(scope="module")
def nft_trainer(tiny_kontext_dir, edit_dataset_dir, tmp_path_factory):
    """NFT with region-decoupled noise and the attention-concentration reward (attention recorded in the rollout)."""
    from train.trainers.nft import NFTTrainer

    config = _config(tiny_kontext_dir, edit_dataset_dir, tmp_path_factory.mktemp("nft"), "objective.name=nft",
                     "sampler.region_noise=true", "train.group_size=4",
                     "rewards.weights={pixel_consistency: 1.0, attention_concentration: 0.5}")
    trainer = NFTTrainer(config)
    yield trainer
    trainer.reward_scheduler.close()


def test_nft_region_noise_shares_the_background_within_a_group(nft_trainer, monkeypatch):
    """NFT with sampler.region_noise: the rollouts start from noise identical outside the edit mask within a
    group and different inside it (region_advantages stays GRPO-only)."""
    from train.config import load_config
    from train.trainers import nft

    with pytest.raises(ValueError, match="GRPO objective only"):
        load_config(None, ["region_advantages.enabled=true", "objective.name=nft"])
    trainer, starts, real_rollout = nft_trainer, [], nft.rollout

    def spy(adapter, model, cond, x, *args, **kwargs):
        starts.append(x.detach().clone())
        return real_rollout(adapter, model, cond, x, *args, **kwargs)

    monkeypatch.setattr(nft, "rollout", spy)
    batch = trainer.make_batch(1)
    trainer.sample(batch, 1)
    noise, inside = torch.cat(starts), trainer.token_masks(batch)
    assert noise.shape[:2] == inside.shape and 0 < inside.float().mean() < 1
    groups = batch.group_ids.cpu()
    leader = torch.stack([torch.nonzero(groups == g)[0, 0] for g in groups])  # each sample's first group member
    followers = leader != torch.arange(len(groups))
    assert followers.sum() == 6 and torch.equal(inside, inside[leader])  # masks are per prompt
    differs = (noise != noise[leader]).any(dim=-1)  # (N, L): token differs from the leader's
    assert not differs[~inside].any()  # the background is shared ...
    assert differs[followers][inside[followers]].all()  # ... every edit-region token is the member's own draw


def test_attention_is_recorded_per_micro_batch_and_scored(nft_trainer):
    """Each rollout micro-batch records its phrase attention; every micro-batch's reward gets its own slice, and
    the joined values equal the reward of the whole batch's maps. Recording does not change the rollout."""
    trainer = nft_trainer
    start = trainer.sampler.state_dict()
    batch = trainer.make_batch(2)
    trainer.sample(batch, 2)
    extras = batch.samples.extras
    rows, cols = trainer.adapter.token_grid(trainer.height, trainer.width)
    assert extras["attention_grid"] == (rows, cols) and extras["attention"].shape == (8, rows * cols)
    assert_close(extras["attention"].sum(1), torch.ones(8), accumulations=rows * cols,
                 why="a renormalised map summed over its tokens")
    _, parts = trainer.score(batch)
    _, whole_parts = trainer.rewards(RewardInputs(batch.samples.images, batch.sources, batch.masks,
                                                      batch.prompts, batch.edit_types, extras=extras))
    assert_exact(parts["attention_concentration"], whole_parts["attention_concentration"], equal_nan=True,
                 why="per-micro-batch slices of the same maps, the same reward per row")
    concentration = parts["attention_concentration"]
    assert ((concentration >= 0) & (concentration <= 1)).all() and concentration.std() > 0
    wiring, overlapping = trainer.attention, trainer.reward_scheduler
    wiring.recorder.remove()  # the same step again without hooks (and without scoring): the same images
    trainer.attention, trainer.reward_scheduler = None, RewardScheduler(trainer.rewards, overlap=False)
    try:
        trainer.sampler.load_state_dict(start)
        plain = trainer.make_batch(2)
        trainer.sample(plain, 2)
        assert plain.samples.extras == {} and torch.equal(plain.samples.images, batch.samples.images)
        with pytest.raises(KeyError, match="did not record attention"):  # the reward says what is missing
            trainer.score(plain)
    finally:
        wiring.recorder.install()
        trainer.attention, trainer.reward_scheduler = wiring, overlapping
