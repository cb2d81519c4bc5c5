"""Helpers shared by the diffusion-adapter tests (FLUX.2, Qwen-Image 2.1, Qwen-Image-Edit, export): a random
image, an ODE rollout, the pipeline's own final latents, the closed-form SDE transition, and the LoRA-loads check.
(Their ``one_thread`` fixture is in tests/train/conftest.py.)"""
from __future__ import annotations

import contextlib
import math

import numpy as np
import torch
from PIL import Image

from tests.support.numerics import assert_close, assert_exact


def random_image(seed: int, height: int, width: int):
    """A seeded random RGB image, as a PIL image (for the pipeline) and a (1, 3, H, W) tensor in [0, 1] (ours)."""
    array = (np.random.default_rng(seed).random((height, width, 3)) * 255).astype(np.uint8)
    return Image.fromarray(array), torch.from_numpy(array / 255.0).float().permute(2, 0, 1)[None]


def ode_final(adapter, cond, noise, steps: int, height: int, width: int):
    """The deterministic (noise level 0) rollout's final latents."""
    from train.rollout.sampler import rollout

    return rollout(adapter, adapter.transformer, cond, noise, adapter.sigmas(steps, height, width), sde="flow_sde",
                   noise_level=0.0, window=(0, 0), generators=[torch.Generator()],
                   autocast=contextlib.nullcontext).final


def pipeline_final_latents(adapter, **call):
    """The pipeline's latents after its last step (packed tokens) and its decoded ``pt`` images."""
    final = {}

    def keep(pipe, step, timestep, tensors):
        final["latents"] = tensors["latents"].clone()
        return {}

    pixels = adapter.pipe(**call, output_type="pt", callback_on_step_end=keep).images
    return final["latents"], pixels


def assert_sde_log_probs_are_the_closed_form(adapter, cond, x, sigmas, sde: str, eta: float, why: str):
    """Rolls out with SDE window (1, 3) and checks each recorded transition's log-prob against the float64 Gaussian
    density of the stored next state under the step's closed-form mean and std, with the adapter's velocity at the
    stored state (flow-SDE: σ = 1 is read as the window's first σ)."""
    from train.rollout.sampler import rollout

    trajectory = rollout(adapter, adapter.transformer, cond, x, sigmas, sde=sde, noise_level=eta, window=(1, 3),
                         generators=[torch.Generator().manual_seed(9)], autocast=contextlib.nullcontext)
    assert sorted(trajectory.log_probs) == [1, 2]
    sigma_max = float(sigmas[1])
    for i in (1, 2):
        s, sn = float(sigmas[i]), float(sigmas[i + 1])
        state = trajectory.states[i]
        v = adapter.velocity(adapter.transformer, state, torch.tensor([s]), cond).double()
        xd, dt = state.double(), sn - s
        if sde == "flow_sde":
            std_t = eta * math.sqrt((s if s < 1 else sigma_max) / (1 - (s if s < 1 else sigma_max)))
            mean = xd * (1 + std_t**2 / (2 * s) * dt) + v * (1 + std_t**2 * (1 - s) / (2 * s)) * dt
            std = std_t * math.sqrt(-dt)
        else:
            std = sn * math.sin(eta * math.pi / 2)
            mean = (xd - s * v) * (1 - sn) + (xd + (1 - s) * v) * math.sqrt(sn**2 - std**2)
        nxt = trajectory.next_states[i].double()
        dens = -((nxt - mean) ** 2) / (2 * std**2) - math.log(std) - 0.5 * math.log(2 * math.pi)
        expected = dens.mean(dim=tuple(range(1, nxt.ndim)))
        assert_close(trajectory.log_probs[i], expected, dtype=torch.float32, accumulations=state[0].numel(),
                     growth="linear", scale=float(expected.abs().max()) + 1.0, why=why)


def assert_batch_equals_single_samples(adapter, batch, prompts, images, x, sigma, accumulations: int, why: str):
    """One velocity call on ``batch`` (the conditioning of ``prompts`` and ``images``) equals one call per sample:
    the text padding/masking keeps the samples apart. Returns the batch's velocity."""
    together = adapter.velocity(adapter.transformer, x, sigma, batch)
    for i, (prompt, image) in enumerate(zip(prompts, images)):
        alone = adapter.velocity(adapter.transformer, x[i : i + 1], sigma, adapter.condition([prompt], image))
        assert_close(together[i : i + 1], alone, dtype=torch.float32, accumulations=accumulations, why=why)
    return together


@contextlib.contextmanager
def loaded_lora(pipe, lora_dir):
    """Loads the LoRA saved in ``lora_dir`` into ``pipe``, checks every saved tensor arrived with its trained (non-zero)
    values, yields the saved state dict, and unloads the LoRA again."""
    from safetensors.torch import load_file

    pipe.load_lora_weights(str(lora_dir))
    try:
        saved = load_file(str(lora_dir / "pytorch_lora_weights.safetensors"))
        loaded = {n: p for n, p in pipe.transformer.named_parameters() if "lora_" in n}
        assert len(loaded) == len(saved) > 0
        name = next(n for n in saved if "lora_B" in n and saved[n].abs().max() > 0)  # trained, not the zero init
        module_name = name.removeprefix("transformer.").replace(".weight", "")
        assert_exact(next(p for n, p in loaded.items() if n.startswith(module_name) and "lora_B" in n), saved[name],
                     why="loading a LoRA copies its values")
        yield saved
    finally:
        pipe.unload_lora_weights()


def assert_pipeline_loads_lora(pipe, lora_dir):
    """:func:`loaded_lora` for a test that only checks the load; returns the saved state dict."""
    with loaded_lora(pipe, lora_dir) as saved:
        return saved


def train_one_step(adapter_name: str, path, objective: str, dataset, out, *overrides: str) -> list[dict]:
    """One training step (groups of 2 at 64x64, 2 sampler steps, no eval/checkpoint) of the tiny_kontext recipe with
    another adapter; returns the run's metrics rows."""
    import json
    from pathlib import Path

    from train.main import run

    recipe = Path(__file__).resolve().parents[2] / "train" / "configs" / "tiny_kontext.yaml"
    run(str(recipe),
        [f"objective.name={objective}", f"model.adapter={adapter_name}", f"model.path={path}",
         f"data.dataset={dataset}", f"output_dir={out}", "data.resolution=[64, 64]", "train.max_steps=1",
         "train.groups_per_step=1", "train.group_size=2", "train.micro_batch_size=2", "train.seed=1",
         "sampler.num_steps=2", "sampler.sde_window=[0, 2]", "sampler.train_steps=1", "eval.every=0",
         "checkpoint.every=0", "logging.progress=false", "logging.tensorboard=false", *overrides])
    return [json.loads(line) for line in (Path(out) / "metrics.jsonl").read_text().splitlines()]
