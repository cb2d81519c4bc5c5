"""The Qwen-Image 2.1 adapter reproduces diffusers' QwenImage21Pipeline (true CFG, a non-square size, two condition
images), is independent of its batch neighbours' text lengths, has closed-form SDE/CPS log-probs, and trains with
GRPO and DiffusionNFT to a LoRA the pipeline loads."""
from __future__ import annotations


import numpy as np
import pytest
import torch

from tests.support import adapters
from tests.support.numerics import assert_close
from tests.support.tiny.qwen_image_21 import cached_tiny_qwen_image_21
from train.config import ModelConfig

HEIGHT, WIDTH = 64, 128  # a 4x8 token grid; output_resolution 90 keeps a 64x128 condition image at its size
RESOLUTION = 90
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def adapter():
    from train.adapters import build_adapter

    return build_adapter(ModelConfig(adapter="qwen_image_21", path=str(cached_tiny_qwen_image_21()),
                                     true_cfg_scale=3.0), torch.device("cpu"), torch.float32)


def _image(seed: int, height: int = HEIGHT, width: int = WIDTH):
    return adapters.random_image(seed, height, width)


def _ode(adapter, cond, noise, steps, height=HEIGHT, width=WIDTH):
    return adapters.ode_final(adapter, cond, noise, steps, height, width)


def _chain(adapter, cond, noise) -> int:
    """(inner dim + every key: text, condition and target tokens) × blocks: the longest float32 sum chain."""
    keys = cond.per_sample["prompt_embeds"].shape[1] + cond.per_sample["image_tokens"].shape[1] + noise.shape[1]
    return (adapter.transformer.inner_dim + keys) * len(adapter.transformer.transformer_blocks)


def _pipeline(adapter, resolution=RESOLUTION, **call):
    return adapters.pipeline_final_latents(adapter, **call, output_resolution=resolution)


@pytest.mark.parity
def test_ode_rollout_with_true_cfg_matches_pipeline_non_square(adapter):
    image, tensor = _image(0)
    cond = adapter.condition(["make it red"], tensor)
    assert adapter.token_grid(HEIGHT, WIDTH) == (4, 8) and cond.shared["condition_shapes"] == [(4, 8)]
    assert int(cond.per_sample["prompt_slots"].sum()) * 4 == 32  # one vision slot per 2x2 latent tokens
    noise = adapter.noise(1, HEIGHT, WIDTH, torch.Generator().manual_seed(3))
    ours = _ode(adapter, cond, noise, 3)
    theirs, pixels = _pipeline(adapter, image=image, prompt="make it red", negative_prompt=" ", true_cfg_scale=3.0,
                               height=HEIGHT, width=WIDTH, num_inference_steps=3, latents=noise.clone())
    chain = _chain(adapter, cond, noise)
    assert_close(ours, theirs, dtype=torch.float32, accumulations=chain, steps=3,
                 why="the same float32 transformer called another way (the pipeline caches the prefix K/V): 3 steps")
    assert_close(adapter.decode(ours, HEIGHT, WIDTH), pixels[:, :3], dtype=torch.float32, accumulations=chain,
                 steps=4, why="the rollout's differences through the latent denormalisation and the VAE decoder")
    plain = adapter.condition(["make it red"], tensor)
    plain.per_sample = {k: v for k, v in plain.per_sample.items() if not k.startswith("negative")}
    assert (_ode(adapter, plain, noise, 3) - ours).abs().max() > 1e-3  # the negative branch takes part


@pytest.mark.parity
def test_two_condition_images_match_pipeline(adapter):
    first, first_tensor = _image(1, 64, 64)
    second, second_tensor = _image(2, 64, 64)
    cond = adapter.condition(["put the hat on the cat"], [first_tensor, second_tensor])
    noise = adapter.noise(1, 64, 64, torch.Generator().manual_seed(4))
    ours = _ode(adapter, cond, noise, 2, 64, 64)
    theirs, _ = _pipeline(adapter, 64, image=[first, second], prompt="put the hat on the cat", negative_prompt=" ",
                          true_cfg_scale=3.0, height=64, width=64, num_inference_steps=2, latents=noise.clone())
    assert_close(ours, theirs, dtype=torch.float32, accumulations=_chain(adapter, cond, noise), steps=2,
                 why="the same float32 transformer called another way: 2 steps, two condition images")


@pytest.mark.parity
def test_batch_of_different_text_lengths_equals_single_samples(adapter):
    _, first = _image(3)
    _, second = _image(4)
    prompts = ["red", "turn the small wooden box into a golden chest"]
    batch = adapter.condition(prompts, torch.cat([first, second]))
    assert batch.per_sample["prompt_length"][0] < batch.per_sample["prompt_length"][1]
    x = adapter.noise(2, HEIGHT, WIDTH, torch.Generator().manual_seed(5))
    adapters.assert_batch_equals_single_samples(
        adapter, batch, prompts, [first, second], x, torch.tensor([0.7]), accumulations=_chain(adapter, batch, x),
        why="one velocity call, batch of 2 vs 1: batch-dependent kernel blocking")


@pytest.mark.parity
@pytest.mark.parametrize("sde", ["flow_sde", "cps"])
def test_sde_log_probs_are_the_closed_form(adapter, sde):
    _, tensor = _image(6)
    cond = adapter.condition(["make the sky blue"], tensor)
    x = adapter.noise(1, HEIGHT, WIDTH, torch.Generator().manual_seed(8))
    adapters.assert_sde_log_probs_are_the_closed_form(
        adapter, cond, x, adapter.sigmas(4, HEIGHT, WIDTH), sde, 0.7,
        why="a float32 mean of the tokens' log densities against float64")


def test_clear_errors(adapter, tmp_path):
    from train.adapters import build_adapter

    with pytest.raises(RuntimeError, match="No weights can be downloaded here"):
        build_adapter(ModelConfig(adapter="qwen_image_21", path=str(tmp_path)), torch.device("cpu"), torch.float32)
    with pytest.raises(ValueError, match="divisible by 32"):
        adapter.token_grid(48, 64)
    with pytest.raises(NotImplementedError, match="block-causal"):
        adapter.phrase_token_mask(["make the cat red"], [["cat"]])


@pytest.mark.parametrize("objective", ["grpo", "nft"])
def test_training_step_saves_a_lora_the_pipeline_loads(objective, adapter, edit_dataset_dir, tmp_path):
    out = tmp_path / objective
    extra = ["objective.regularizer.enabled=false"] if objective == "grpo" else ["objective.regularizer.grid=token"]
    metrics = adapters.train_one_step("qwen_image_21", cached_tiny_qwen_image_21(), objective, edit_dataset_dir, out,
                                      "model.true_cfg_scale=1.0", *extra)
    assert np.isfinite(metrics[0]["loss"]) and metrics[0]["grad_norm"] > 0
    if objective == "grpo":
        assert metrics[0]["ratio_first"] == 1.0
    adapters.assert_pipeline_loads_lora(adapter.pipe, out / "lora")


def test_attention_recording_refuses_with_the_reason(adapter):
    from train.rollout.attention import AttentionRecorder

    with pytest.raises(NotImplementedError, match="block-causal"):
        AttentionRecorder(adapter.transformer)
