"""The Kontext adapter reproduces diffusers' FluxKontextPipeline, and GRPO moves log-probs the right way."""
from __future__ import annotations

import contextlib

import numpy as np
import pytest
import torch
from PIL import Image

from tests.support.numerics import assert_close
from train.config import LoraConfig, ModelConfig
from train.algorithms.grpo import grpo_loss
from train.rollout.sampler import rollout
from train.algorithms.sde import flow_sde_step


@pytest.fixture(scope="module")
def adapter(tiny_kontext_dir):
    from train.adapters import build_adapter

    return build_adapter(ModelConfig(path=str(tiny_kontext_dir), max_sequence_length=32), torch.device("cpu"),
                         torch.float32)


def _source(seed=0, size=32):
    array = (np.random.default_rng(seed).random((size, size, 3)) * 255).astype(np.uint8)
    return Image.fromarray(array), torch.from_numpy(array / 255.0).float().permute(2, 0, 1)[None]


@pytest.mark.parity
def test_ode_rollout_matches_pipeline(adapter, tiny_kontext_pipe):
    image, tensor = _source()
    cond = adapter.condition(["make it red"], tensor)
    noise = adapter.noise(1, 32, 32, torch.Generator().manual_seed(3))
    sigmas = adapter.sigmas(3, 32, 32)
    ours = rollout(adapter, adapter.transformer, cond, noise, sigmas, sde="flow_sde", noise_level=0.0, window=(0, 0),
                   generators=[torch.Generator()], autocast=contextlib.nullcontext).final
    theirs = tiny_kontext_pipe(image=image, prompt="make it red", height=32, width=32, max_area=32 * 32,
                               _auto_resize=False, num_inference_steps=3, latents=noise.clone(), max_sequence_length=32,
                               guidance_scale=2.5,
                               output_type="latent").images
    # the longest chain of float32 sums: per layer an inner-dimension dot product and a softmax over every key
    # (target + condition image tokens + 32 text tokens), times the layers
    transformer, keys = adapter.transformer, 2 * noise.shape[1] + 32
    layers = len(transformer.transformer_blocks) + len(transformer.single_transformer_blocks)
    chain = (transformer.inner_dim + keys) * layers
    assert_close(ours, theirs, dtype=torch.float32, accumulations=chain, steps=3,
                 why="the same float32 transformer called another way (batching, packing): 3 denoising steps")
    decoded = adapter.decode(ours, 32, 32)
    assert decoded.shape == (1, 3, 32, 32) and 0 <= decoded.min() and decoded.max() <= 1
    assert adapter.token_grid(32, 32) == (16, 16)
    # condition tokens sit after the target tokens with position-id first coordinate 1
    ids = cond.shared["img_ids"]
    assert ids.shape[0] == 2 * 256 and ids[:256, 0].eq(0).all() and ids[256:, 0].eq(1).all()


def test_positive_advantage_raises_log_prob(tiny_kontext_dir):
    from train.adapters import build_adapter

    adapter = build_adapter(ModelConfig(path=str(tiny_kontext_dir), max_sequence_length=32), torch.device("cpu"),
                            torch.float32)
    adapter.add_lora(LoraConfig(rank=4, alpha=4))
    _, tensor = _source(1)
    cond = adapter.condition(["add a hat"], tensor)
    x = adapter.noise(1, 32, 32, torch.Generator().manual_seed(0))
    sigmas = adapter.sigmas(4, 32, 32)
    traj = rollout(adapter, adapter.transformer, cond, x, sigmas, sde="flow_sde", noise_level=0.7, window=(1, 2),
                   generators=[torch.Generator().manual_seed(1)], autocast=contextlib.nullcontext)
    s, sn = float(sigmas[1]), float(sigmas[2])

    def log_prob():
        v = adapter.velocity(adapter.transformer, traj.states[1], torch.tensor([s]), cond)
        return flow_sde_step(traj.states[1], v, s, sn, 0.7, prev_sample=traj.next_states[1]).log_prob

    params = [p for p in adapter.transformer.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=1e-3)  # sign-based first step: every LoRA weight moves
    before = log_prob()
    assert torch.equal(before.detach(), traj.log_probs[1])  # on-policy: ratio exactly 1
    loss, stats = grpo_loss(before, traj.log_probs[1], torch.tensor([1.0]), torch.tensor([True]), clip_range=10.0)
    assert stats["ratio_mean"].item() == 1.0
    loss.backward()
    optimizer.step()
    with torch.no_grad():
        after = log_prob()
    assert after.item() > before.item()
