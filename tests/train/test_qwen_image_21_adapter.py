"""The Qwen-Image 2.1 adapter reproduces diffusers' QwenImage21Pipeline (true CFG, a non-square size, two condition
images), is independent of its batch neighbours' text lengths, has closed-form SDE/CPS log-probs, and trains with
GRPO and DiffusionNFT to a LoRA the pipeline loads."""
from __future__ import annotations

import contextlib
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.support.numerics import assert_close
from tests.support.tiny.qwen_image_21 import cached_tiny_qwen_image_21
from train.config import ModelConfig
from train.rollout.sampler import rollout

REPO = Path(__file__).resolve().parents[2]
HEIGHT, WIDTH = 64, 128  # a 4x8 token grid; output_resolution 90 keeps a 64x128 condition image at its size
RESOLUTION = 90


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny matrices on a shared 2-core machine: one thread avoids oversubscription."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def adapter():
    from train.adapters import build_adapter

    return build_adapter(ModelConfig(adapter="qwen_image_21", path=str(cached_tiny_qwen_image_21()),
                                     true_cfg_scale=3.0), torch.device("cpu"), torch.float32)


def _image(seed: int, height: int = HEIGHT, width: int = WIDTH):
    array = (np.random.default_rng(seed).random((height, width, 3)) * 255).astype(np.uint8)
    return Image.fromarray(array), torch.from_numpy(array / 255.0).float().permute(2, 0, 1)[None]


def _ode(adapter, cond, noise, steps, height=HEIGHT, width=WIDTH):
    return rollout(adapter, adapter.transformer, cond, noise, adapter.sigmas(steps, height, width), sde="flow_sde",
                   noise_level=0.0, window=(0, 0), generators=[torch.Generator()],
                   autocast=contextlib.nullcontext).final


def _chain(adapter, cond, noise) -> int:
    """(inner dim + every key: text, condition and target tokens) × blocks: the longest float32 sum chain."""
    keys = cond.per_sample["prompt_embeds"].shape[1] + cond.per_sample["image_tokens"].shape[1] + noise.shape[1]
    return (adapter.transformer.inner_dim + keys) * len(adapter.transformer.transformer_blocks)


def _pipeline(adapter, resolution=RESOLUTION, **call):
    final = {}

    def keep(pipe, step, timestep, tensors):
        final["latents"] = tensors["latents"].clone()
        return {}

    pixels = adapter.pipe(**call, output_resolution=resolution, output_type="pt", callback_on_step_end=keep).images
    return final["latents"], pixels


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
    together = adapter.velocity(adapter.transformer, x, torch.tensor([0.7]), batch)
    for i, (prompt, image) in enumerate(zip(prompts, (first, second))):
        alone = adapter.velocity(adapter.transformer, x[i : i + 1], torch.tensor([0.7]),
                                 adapter.condition([prompt], image))
        assert_close(together[i : i + 1], alone, dtype=torch.float32, accumulations=_chain(adapter, batch, x),
                     why="one velocity call, batch of 2 vs 1: batch-dependent kernel blocking")


@pytest.mark.parity
@pytest.mark.parametrize("sde", ["flow_sde", "cps"])
def test_sde_log_probs_are_the_closed_form(adapter, sde):
    _, tensor = _image(6)
    cond = adapter.condition(["make the sky blue"], tensor)
    x = adapter.noise(1, HEIGHT, WIDTH, torch.Generator().manual_seed(8))
    sigmas, eta = adapter.sigmas(4, HEIGHT, WIDTH), 0.7
    trajectory = rollout(adapter, adapter.transformer, cond, x, sigmas, sde=sde, noise_level=eta, window=(1, 3),
                         generators=[torch.Generator().manual_seed(9)], autocast=contextlib.nullcontext)
    for i in (1, 2):
        s, sn = float(sigmas[i]), float(sigmas[i + 1])
        state = trajectory.states[i]
        v = adapter.velocity(adapter.transformer, state, torch.tensor([s]), cond).double()
        xd, dt = state.double(), sn - s
        if sde == "flow_sde":
            std_t = eta * math.sqrt(s / (1 - s))
            mean = xd * (1 + std_t**2 / (2 * s) * dt) + v * (1 + std_t**2 * (1 - s) / (2 * s)) * dt
            std = std_t * math.sqrt(-dt)
        else:
            std = sn * math.sin(eta * math.pi / 2)
            mean = (xd - s * v) * (1 - sn) + (xd + (1 - s) * v) * math.sqrt(sn**2 - std**2)
        nxt = trajectory.next_states[i].double()
        expected = (-((nxt - mean) ** 2) / (2 * std**2) - math.log(std) - 0.5 * math.log(2 * math.pi)).mean(dim=(1, 2))
        assert_close(trajectory.log_probs[i], expected, dtype=torch.float32, accumulations=state[0].numel(),
                     growth="linear", scale=float(expected.abs().max()) + 1.0,
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
    from train.main import run

    out = tmp_path / objective
    extra = ["objective.regularizer.enabled=false"] if objective == "grpo" else ["objective.regularizer.grid=token"]
    run(str(REPO / "train" / "configs" / "tiny_kontext.yaml"),
        [f"objective.name={objective}", "model.adapter=qwen_image_21", f"model.path={cached_tiny_qwen_image_21()}",
         "model.true_cfg_scale=1.0", f"data.dataset={edit_dataset_dir}", f"output_dir={out}",
         "data.resolution=[64, 64]", "train.max_steps=1", "train.groups_per_step=1", "train.group_size=2",
         "train.micro_batch_size=2", "train.seed=1", "sampler.num_steps=2", "sampler.sde_window=[0, 2]",
         "sampler.train_steps=1", "eval.every=0", "checkpoint.every=0", "logging.progress=false",
         "logging.tensorboard=false", *extra])
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert np.isfinite(metrics[0]["loss"]) and metrics[0]["grad_norm"] > 0
    if objective == "grpo":
        assert metrics[0]["ratio_first"] == 1.0
    pipe = adapter.pipe
    pipe.load_lora_weights(str(out / "lora"))
    try:
        assert any("lora" in name for name, _ in pipe.transformer.named_parameters())
    finally:
        pipe.unload_lora_weights()


def test_attention_recording_refuses_with_the_reason(adapter):
    from train.rollout.attention import AttentionRecorder

    with pytest.raises(NotImplementedError, match="block-causal"):
        AttentionRecorder(adapter.transformer)
