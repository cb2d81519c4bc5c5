"""The FLUX.2 adapter ([klein] with true CFG, [dev] with the guidance embedding) reproduces diffusers'
Flux2KleinPipeline / Flux2Pipeline (one and several reference images, a non-square size), its SDE/CPS log-probs are
the closed-form Gaussian densities, and GRPO and DiffusionNFT each run an update whose LoRA the pipeline loads."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tests.support import adapters
from tests.support.numerics import assert_close
from tests.support.tiny.flux2 import cached_tiny_flux2
from train.config import ModelConfig

HEIGHT, WIDTH = 64, 96  # the pipelines refuse condition images under 64 px; 16x24 latents, 8x12 tokens
TEXT = 32  # model.max_sequence_length of the tests ([klein]); [dev]'s system message alone is ~190 tokens here
DEV_TEXT = 224
pytestmark = pytest.mark.usefixtures("one_thread")


def _adapter(variant: str, **overrides):
    from train.adapters import build_adapter

    config = ModelConfig(adapter="flux2", path=str(cached_tiny_flux2(variant)),
                         max_sequence_length=DEV_TEXT if variant == "dev" else TEXT,
                         true_cfg_scale=4.0, guidance_scale=3.5, **overrides)
    return build_adapter(config, torch.device("cpu"), torch.float32)


@pytest.fixture(scope="module")
def klein():
    return _adapter("klein")


@pytest.fixture(scope="module")
def dev():
    return _adapter("dev")


def _image(seed: int, height: int = HEIGHT, width: int = WIDTH):
    return adapters.random_image(seed, height, width)


def _ode(adapter, cond, noise, steps, height=HEIGHT, width=WIDTH):
    return adapters.ode_final(adapter, cond, noise, steps, height, width)


def _chain(adapter, cond, noise) -> int:
    """The longest chain of float32 sums in one transformer call: per block an inner-dimension dot product and a
    softmax over every key (text + target + reference tokens), times the blocks."""
    transformer = adapter.transformer
    keys = cond.per_sample["prompt_embeds"].shape[1] + noise.shape[1] + cond.per_sample["image_tokens"].shape[1]
    blocks = len(transformer.transformer_blocks) + len(transformer.single_transformer_blocks)
    return (transformer.inner_dim + keys) * blocks


def _unpacked(noise, rows, cols):
    """Packed noise (B, L, C) as the (B, C, rows, cols) latents the pipelines take."""
    return noise.transpose(1, 2).reshape(noise.shape[0], noise.shape[2], rows, cols).clone()


def _pipeline_final_tokens(adapter, **call):
    """The pipeline's latents after its last step, as packed tokens (its output_type="latent" is unpacked)."""
    return adapters.pipeline_final_latents(adapter, **call, max_sequence_length=adapter.config.max_sequence_length)


@pytest.mark.parity
def test_klein_ode_rollout_with_cfg_matches_pipeline_non_square(klein):
    assert klein.variant == "klein" and klein.cfg_scale == 4.0
    image, tensor = _image(0)
    cond = klein.condition(["make it red"], tensor)
    assert "negative_embeds" in cond.per_sample and cond.per_sample["prompt_embeds"].shape[1:] == (TEXT, 48)
    rows, cols = klein.token_grid(HEIGHT, WIDTH)
    assert (rows, cols) == (8, 12) and cond.shared["reference_shapes"] == [(8, 12)]
    noise = klein.noise(1, HEIGHT, WIDTH, torch.Generator().manual_seed(3))
    ours = _ode(klein, cond, noise, 3)
    theirs, pixels = _pipeline_final_tokens(klein, image=image, prompt="make it red", height=HEIGHT, width=WIDTH,
                                            num_inference_steps=3, guidance_scale=4.0,
                                            latents=_unpacked(noise, rows, cols))
    chain = _chain(klein, cond, noise)
    assert_close(ours, theirs, dtype=torch.float32, accumulations=chain, steps=3,
                 why="the same float32 transformer called another way (CFG batched, packing): 3 steps")
    assert_close(klein.decode(ours, HEIGHT, WIDTH), pixels, dtype=torch.float32, accumulations=chain, steps=4,
                 why="the rollout's differences through the batch-norm denormalisation and the VAE decoder")
    # reference tokens follow the target tokens: T = 10 for the first reference, 0 for the target
    ids = cond.shared["reference_ids"]
    assert ids.shape == (rows * cols, 4) and ids[:, 0].eq(10).all() and ids[:, 3].eq(0).all()
    # without CFG the rollout differs: the negative branch really takes part
    plain = klein.condition(["make it red"], tensor)
    plain.per_sample.pop("negative_embeds")
    assert (_ode(klein, plain, noise, 3) - ours).abs().max() > 1e-3


@pytest.mark.parity
def test_klein_two_reference_images_match_pipeline(klein):
    """Several reference images per sample, of different sizes: T = 10, 20 and their own grids, as the pipeline."""
    first, first_tensor = _image(1, 64, 64)
    second, second_tensor = _image(2, 64, 96)
    cond = klein.condition(["put the hat on the cat"], [first_tensor, second_tensor])
    assert cond.shared["reference_shapes"] == [(8, 8), (8, 12)]
    assert cond.shared["reference_ids"][:, 0].unique().tolist() == [10, 20]
    noise = klein.noise(1, 64, 64, torch.Generator().manual_seed(4))
    ours = _ode(klein, cond, noise, 2, 64, 64)
    theirs, _ = _pipeline_final_tokens(klein, image=[first, second], prompt="put the hat on the cat", height=64,
                                       width=64, num_inference_steps=2, guidance_scale=4.0,
                                       latents=_unpacked(noise, 8, 8))
    assert_close(ours, theirs, dtype=torch.float32, accumulations=_chain(klein, cond, noise), steps=2,
                 why="the same float32 transformer called another way: 2 steps, two reference images")


@pytest.mark.parity
def test_dev_ode_rollout_with_guidance_embedding_matches_pipeline(dev):
    assert dev.variant == "dev" and dev.cfg_scale == 1.0 and dev.transformer.config.guidance_embeds
    image, tensor = _image(5)
    cond = dev.condition(["add a hat"], tensor)
    assert "negative_embeds" not in cond.per_sample and cond.per_sample["prompt_embeds"].shape[1:] == (DEV_TEXT, 48)
    rows, cols = dev.token_grid(HEIGHT, WIDTH)
    noise = dev.noise(1, HEIGHT, WIDTH, torch.Generator().manual_seed(6))
    ours = _ode(dev, cond, noise, 2)
    theirs, _ = _pipeline_final_tokens(dev, image=image, prompt="add a hat", height=HEIGHT, width=WIDTH,
                                       num_inference_steps=2, guidance_scale=3.5, latents=_unpacked(noise, rows, cols))
    assert_close(ours, theirs, dtype=torch.float32, accumulations=_chain(dev, cond, noise), steps=2,
                 why="the same float32 transformer called another way: 2 steps, guidance embedding 3.5")
    # the guidance value reaches the model
    other = _adapter("dev")
    other.config.guidance_scale = 1.0
    assert (other.velocity(other.transformer, noise, torch.tensor([0.8]), cond)
            - dev.velocity(dev.transformer, noise, torch.tensor([0.8]), cond)).abs().max() > 1e-4


@pytest.mark.parity
@pytest.mark.parametrize("sde", ["flow_sde", "cps"])
def test_sde_log_probs_are_the_closed_form(klein, sde):
    """Each recorded SDE transition's log-prob is the float64 Gaussian density of the stored next state under the
    step's closed-form mean and std, with the adapter's (CFG-guided) velocity at the stored state."""
    _, tensor = _image(7)
    cond = klein.condition(["make the sky blue"], tensor)
    x = klein.noise(1, HEIGHT, WIDTH, torch.Generator().manual_seed(8))
    sigmas = klein.sigmas(4, HEIGHT, WIDTH)  # the window avoids the last step (σ_next = 0: CPS has std 0 there)
    adapters.assert_sde_log_probs_are_the_closed_form(
        klein, cond, x, sigmas, sde, 0.7,
        why="a float32 mean of the tokens' log densities against float64; (x − mean)/std amplifies its rounding")


def test_clear_errors(tmp_path, klein):
    from train.adapters import build_adapter

    def build(path):
        return build_adapter(ModelConfig(adapter="flux2", path=str(path)), torch.device("cpu"), torch.float32)

    with pytest.raises(RuntimeError, match="No weights can be downloaded here"):
        build(tmp_path)
    (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": "FluxKontextPipeline"}))
    with pytest.raises(ValueError, match="holds a FluxKontextPipeline"):
        build(tmp_path)
    with pytest.raises(ValueError, match="divisible by 8"):
        klein.token_grid(60, 64)


def test_phrase_token_mask_marks_the_phrase_in_the_templated_prompt(klein, dev):
    """The marked tokens are the phrase's, checked against the ids the text encoder receives (byte-level tiny
    tokenizers: one token per character)."""
    for adapter in (klein, dev):
        prompts = ["make the cat red", "add a hat"]
        length = adapter.config.max_sequence_length
        mask = adapter.phrase_token_mask(prompts, [["cat"], ["dog"]])
        assert mask.shape == (2, length) and mask.dtype == torch.bool
        tokenizer = adapter._text_tokenizer()
        for row, (prompt, expected) in enumerate(zip(prompts, ["cat", "add a hat"])):
            ids = tokenizer(adapter._prompt_text(prompt), padding="max_length", max_length=length, truncation=True,
                            add_special_tokens=False)["input_ids"]
            assert tokenizer.decode([i for i, m in zip(ids, mask[row].tolist()) if m]) == expected


@pytest.mark.parametrize("objective", ["grpo", "nft"])
def test_training_step_saves_a_lora_the_pipeline_loads(objective, klein, edit_dataset_dir, tmp_path):
    out = tmp_path / objective
    extra = ["objective.regularizer.enabled=false"] if objective == "grpo" else ["objective.regularizer.grid=latent"]
    metrics = adapters.train_one_step("flux2", cached_tiny_flux2("klein"), objective, edit_dataset_dir, out,
                                      "model.true_cfg_scale=2.0", *extra)
    assert [m["step"] for m in metrics] == [1] and np.isfinite(metrics[0]["loss"])
    assert metrics[0]["kept_fraction"] == 1.0 and metrics[0]["grad_norm"] > 0
    if objective == "grpo":
        assert metrics[0]["ratio_first"] == 1.0  # on-policy through the CFG-guided velocity
    else:
        assert "regularizer" in metrics[0]
    adapters.assert_pipeline_loads_lora(klein.pipe, out / "lora")


@pytest.mark.parity
def test_attention_map_under_cfg_is_the_conditional_branch_and_equals_brute_force(klein, monkeypatch):
    """RC-GRPO's attention reward on FLUX.2: the recorder wraps both block types (outputs bit-identical) and its map
    is the brute-force text→target attention of the conditional rows (CFG stacks them first)."""
    import diffusers.models.transformers.transformer_flux2 as flux2_module

    from tests.train.test_attention import AttentionSpy
    from train.rollout.attention import AttentionRecorder

    prompts = ["make the cat red", "add a hat"]
    _, first = _image(10)
    _, second = _image(11)
    cond = klein.condition(prompts, torch.cat([first, second]))
    noise = klein.noise(2, HEIGHT, WIDTH, torch.Generator().manual_seed(12))
    mask = klein.phrase_token_mask(prompts, [["cat"], ["hat"]])
    with torch.no_grad():
        plain = klein.velocity(klein.transformer, noise, torch.tensor([0.8]), cond)
    recorder = AttentionRecorder(klein.transformer)
    spy = AttentionSpy(monkeypatch, flux2_module)
    try:
        with torch.no_grad(), recorder.recording(mask, noise.shape[1]):
            recorded = klein.velocity(klein.transformer, noise, torch.tensor([0.8]), cond)
        maps = recorder.take()
    finally:
        recorder.remove()
    assert torch.equal(recorded, plain)
    blocks = len(klein.transformer.transformer_blocks) + len(klein.transformer.single_transformer_blocks)
    assert len(spy.calls) == blocks and spy.calls[0][0].shape[0] == 4  # one CFG forward: 2 conditional + 2 negative
    reference = spy.reference_map(mask, noise.shape[1], rows=slice(0, 2))
    keys = spy.calls[0][1].shape[1]
    assert_close(maps.double(), reference, dtype=torch.float32, accumulations=keys * blocks, growth="linear",
                 why="recorded float32 probabilities vs a float64 softmax, summed over the blocks")
