"""Attention recording for RC-GRPO's attention-concentration reward: exact in-mask fractions, outputs untouched, and
recorded maps equal to a brute-force softmax(QKᵀ/√d) over the q/k that diffusers' attention actually receives."""
from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from train.attention import AttentionRecorder, attention_fraction_inside
from train.config import LoraConfig, ModelConfig
from train.rewards import RewardInputs, WeightedRewards

SIZE = 16  # pixels; the tiny VAE has scale 1, so an 8x8 token grid
PROMPTS = ["make the cat red", "turn the sky blue", "add a hat"]


@pytest.fixture(scope="module")
def adapter(tiny_kontext_dir):
    """The tiny Kontext model with a LoRA whose up-projections are random (so LoRA changes q/k/v/out)."""
    from train.adapters import build_adapter

    adapter = build_adapter(ModelConfig(path=str(tiny_kontext_dir), max_sequence_length=32), torch.device("cpu"),
                            torch.float32)
    adapter.add_lora(LoraConfig(rank=2, alpha=2))
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, parameter in adapter.transformer.named_parameters():
            if "lora_B" in name:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.1)
    return adapter


@pytest.fixture(scope="module")
def batch(adapter):
    sources = torch.rand(len(PROMPTS), 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))
    cond = adapter.condition(PROMPTS, sources)
    noise = adapter.noise(len(PROMPTS), SIZE, SIZE, torch.Generator().manual_seed(2))
    return cond, noise


class AttentionSpy:
    """Wraps diffusers' ``dispatch_attention_fn`` in the FLUX module: keeps the (q, k, v, output) of every call."""

    def __init__(self, monkeypatch):
        import diffusers.models.transformers.transformer_flux as flux

        self.calls, real = [], flux.dispatch_attention_fn

        def spy(query, key, value, **kwargs):
            output = real(query, key, value, **kwargs)
            self.calls.append((query.detach(), key.detach(), value.detach(), output.detach()))
            return output

        monkeypatch.setattr(flux, "dispatch_attention_fn", spy)

    def reference_map(self, text_mask: torch.Tensor, num_target: int) -> torch.Tensor:
        """Brute force: the full attention matrix of every call in float64, the selected text rows' mass on the
        target tokens summed over heads, rows and calls, renormalised per sample."""
        sums = torch.zeros(text_mask.shape[0], num_target, dtype=torch.float64)
        text_len = text_mask.shape[1]
        for query, key, value, output in self.calls:  # (B, S, H, D), text tokens first
            query, key = query.double(), key.double()
            probs = (torch.einsum("bqhd,bkhd->bhqk", query, key) / math.sqrt(query.shape[-1])).softmax(-1)
            # the reconstructed attention IS the model's: it reproduces the attention output
            torch.testing.assert_close(torch.einsum("bhqk,bkhd->bqhd", probs, value.double()), output.double(),
                                       rtol=1e-4, atol=1e-5)
            rows = probs[:, :, :text_len, text_len:text_len + num_target] * text_mask[:, None, :, None]
            sums += rows.sum(dim=(1, 2))
        return sums / sums.sum(dim=1, keepdim=True)


def test_in_mask_fraction_matches_numpy():
    rng = np.random.default_rng(0)
    maps, masks = rng.random((6, 40)), rng.random((6, 40)) > 0.6
    maps[2] = np.nan  # nothing recorded for this sample
    masks[4] = False
    expected = [(m * k).sum() / m.sum() for m, k in zip(maps, masks)]
    got = attention_fraction_inside(torch.from_numpy(maps), torch.from_numpy(masks))
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-12)
    assert np.isnan(got[2]) and got[4] == 0
    with pytest.raises(ValueError, match="differ"):
        attention_fraction_inside(torch.ones(2, 3), torch.ones(2, 4, dtype=torch.bool))


def test_reward_pools_the_mask_to_the_token_grid():
    rng = np.random.default_rng(1)
    rows, cols, cell = 4, 5, 3  # 12x15 pixel masks, 3x3 pixels per token
    pixel_masks = rng.random((3, rows * cell, cols * cell)) > 0.5
    pixel_masks[2] = False  # no edit region: the reward is undefined
    maps = rng.random((3, rows * cols))
    maps /= maps.sum(1, keepdims=True)
    # a token is inside when more than half of its pixels are
    cells = pixel_masks.reshape(3, rows, cell, cols, cell).mean(axis=(2, 4)) > 0.5
    expected = (maps * cells.reshape(3, -1)).sum(1)
    inputs = RewardInputs(images=torch.zeros(3, 3, 12, 15), sources=torch.zeros(3, 3, 12, 15),
                          edit_masks=torch.from_numpy(pixel_masks), prompts=["p"] * 3, edit_types=["x"] * 3,
                          extras={"attention": torch.from_numpy(maps).float(), "attention_grid": (rows, cols)})
    total, parts = WeightedRewards({"attention_concentration": 1.0})(inputs)
    np.testing.assert_allclose(parts["attention_concentration"][:2].numpy(), expected[:2], rtol=1e-6)
    assert torch.isnan(total[2])
    with pytest.raises(KeyError, match="the trainer did not record attention"):
        WeightedRewards({"attention_concentration": 1.0})(RewardInputs(**{**vars(inputs), "extras": {}}))
    with pytest.raises(ValueError, match="token grid"):
        WeightedRewards({"attention_concentration": 1.0})(
            RewardInputs(**{**vars(inputs), "extras": {**inputs.extras, "attention_grid": (5, 5)}}))


def test_phrase_token_mask_marks_the_phrase(adapter):
    from train.adapters.base import EditModelAdapter

    tokenizer = adapter.pipe.tokenizer_2
    before = adapter.phrase_fallbacks
    mask = adapter.phrase_token_mask(["make the cat red", "Turn the SKY blue, the sky", "add a hat"],
                                     [["cat"], "sky", ["dog"]])
    assert mask.shape == (3, 32) and mask.dtype == torch.bool
    ids = tokenizer(["make the cat red", "Turn the SKY blue, the sky"], padding="max_length", max_length=32)["input_ids"]
    assert "".join(tokenizer.convert_ids_to_tokens([ids[0][i] for i in mask[0].nonzero()])) == "\u2581cat"
    assert "".join(tokenizer.convert_ids_to_tokens([ids[1][i] for i in mask[1].nonzero()])).lower() == "\u2581sky" * 2
    # "dog" is not in the prompt: all non-padding tokens, counted
    assert mask[2].sum() == len(tokenizer("add a hat")["input_ids"]) and adapter.phrase_fallbacks == before + 1
    with pytest.raises(NotImplementedError, match="Other"):
        EditModelAdapter.phrase_token_mask(type("Other", (), {})(), ["p"], ["q"])


def test_outputs_and_gradients_are_bit_identical(adapter, batch):
    cond, noise = batch
    sigma = torch.tensor([0.6])
    first_attention = adapter.transformer.transformer_blocks[0].attn
    original = first_attention.processor

    def forward_and_grads():
        adapter.transformer.zero_grad(set_to_none=True)
        out = adapter.velocity(adapter.transformer, noise, sigma, cond)
        (out ** 2).mean().backward()
        return out.detach(), [p.grad.clone() for p in adapter.transformer.parameters() if p.requires_grad]

    plain, plain_grads = forward_and_grads()
    recorder = AttentionRecorder(adapter.transformer)
    AttentionRecorder(adapter.transformer)  # a second recorder takes the wrappers over: never wrapped twice
    with pytest.raises(RuntimeError, match="taken over"), recorder.recording(torch.ones(3, 32, dtype=torch.bool), 1):
        pass
    recorder.install()
    assert first_attention.processor.inner is original
    try:
        idle, idle_grads = forward_and_grads()
        mask = adapter.phrase_token_mask(PROMPTS, ["cat", "sky", "hat"])
        recorder = AttentionRecorder(adapter.transformer)
        with recorder.recording(mask, noise.shape[1]):
            recorded, recorded_grads = forward_and_grads()
            with torch.no_grad():
                recorded_no_grad = adapter.velocity(adapter.transformer, noise, sigma, cond)
        assert recorder.take().shape == (len(PROMPTS), noise.shape[1])
    finally:
        recorder.remove()
    assert first_attention.processor is original
    for output in (idle, recorded, recorded_no_grad):
        assert torch.equal(output, plain)
    for grads in (idle_grads, recorded_grads):
        assert all(torch.equal(a, b) for a, b in zip(grads, plain_grads))


def test_recorded_map_equals_brute_force_over_layers_and_calls(adapter, batch, monkeypatch):
    cond, noise = batch
    mask = adapter.phrase_token_mask(PROMPTS, ["cat", "sky", "hat"])
    mask[2] = False  # no selected token: NaN row
    recorder = AttentionRecorder(adapter.transformer)
    spy = AttentionSpy(monkeypatch)
    try:
        with torch.no_grad(), recorder.recording(mask, noise.shape[1]):
            for sigma in (0.9, 0.4):  # two denoising calls accumulate
                adapter.velocity(adapter.transformer, noise, torch.tensor([sigma]), cond)
        maps = recorder.take()
    finally:
        recorder.remove()
    num_layers = len(adapter.transformer.transformer_blocks) + len(adapter.transformer.single_transformer_blocks)
    assert len(spy.calls) == 2 * num_layers
    assert maps.shape == (3, noise.shape[1])
    assert torch.isnan(maps[2]).all()
    assert (maps[:2] >= 0).all() and torch.allclose(maps[:2].sum(1), torch.ones(2))
    reference = spy.reference_map(mask, noise.shape[1])
    torch.testing.assert_close(maps[:2].double(), reference[:2], rtol=1e-4, atol=1e-6)
    with pytest.raises(RuntimeError, match="nothing recorded"):
        recorder.take()


@pytest.mark.parametrize("stream", ["dual", "single"])
def test_one_layer_on_random_inputs_equals_brute_force(adapter, monkeypatch, stream):
    transformer = adapter.transformer
    generator = torch.Generator().manual_seed(3)
    text_len, image_len, dim = 6, 10, transformer.inner_dim
    ids = torch.cat([torch.zeros(text_len, 3), torch.randint(0, 8, (image_len, 3), generator=generator).float()])
    rotary = transformer.pos_embed(ids)
    text = torch.randn(2, text_len, dim, generator=generator)
    image = torch.randn(2, image_len, dim, generator=generator)
    mask = torch.rand(2, text_len, generator=generator) > 0.4
    mask[:, 0] = True
    num_target = 7  # the last 3 image tokens play the condition image
    recorder = AttentionRecorder(transformer)
    spy = AttentionSpy(monkeypatch)
    try:
        with torch.no_grad(), recorder.recording(mask, num_target):
            if stream == "dual":
                transformer.transformer_blocks[0].attn(hidden_states=image, encoder_hidden_states=text,
                                                       image_rotary_emb=rotary)
            else:
                transformer.single_transformer_blocks[0].attn(hidden_states=torch.cat([text, image], dim=1),
                                                              image_rotary_emb=rotary)
        maps = recorder.take()
    finally:
        recorder.remove()
    assert len(spy.calls) == 1
    torch.testing.assert_close(maps.double(), spy.reference_map(mask, num_target), rtol=1e-5, atol=1e-7)


def test_misuse_and_unsupported_models_get_clear_errors(adapter):
    from diffusers.models.transformers.transformer_flux import FluxAttention

    other = FluxAttention(query_dim=8, heads=2, dim_head=4, processor=SimpleNamespace())
    with pytest.raises(NotImplementedError, match="SimpleNamespace"):
        AttentionRecorder(torch.nn.Sequential(other))
    supported = FluxAttention(query_dim=8, heads=2, dim_head=4)
    AttentionRecorder(torch.nn.Sequential(supported))
    supported.set_attention_backend("native")  # diffusers sets it on the processor: it reaches the wrapped one
    assert supported.processor.inner._attention_backend == "native"
    with pytest.raises(NotImplementedError, match="FLUX transformers only"):
        AttentionRecorder(torch.nn.Linear(2, 2))
    recorder = AttentionRecorder(adapter.transformer)
    try:
        with pytest.raises(ValueError, match="bool"), recorder.recording(torch.ones(2, 32), 64):
            pass
        with recorder.recording(torch.ones(3, 32, dtype=torch.bool), 64):
            pass
        with pytest.raises(ValueError, match="take\\(\\)"), recorder.recording(torch.ones(2, 32, dtype=torch.bool), 64):
            pass
        assert torch.isnan(recorder.take()).all()  # a block without any transformer call recorded nothing
    finally:
        recorder.remove()
