"""Attention recording for RC-GRPO's attention-concentration reward: exact in-mask fractions, outputs untouched, and
recorded maps equal to a brute-force softmax(QKᵀ/√d) over the q/k that diffusers' attention actually receives."""
from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from tests.support.numerics import assert_close
from train.rewards.attention import attention_fraction_inside
from train.rollout.attention import AttentionRecorder
from train.config import LoraConfig, ModelConfig
from train.rewards import RewardInputs, WeightedRewards

SIZE = 16  # pixels; the tiny VAE has scale 1, so an 8x8 token grid
PROMPTS = ["make the cat red", "turn the sky blue", "add a hat"]


def adapter_with_random_lora(config: ModelConfig):
    """The model of ``config`` with a LoRA whose up-projections are random (so LoRA changes q/k/v/out)."""
    from train.adapters import build_adapter

    adapter = build_adapter(config, torch.device("cpu"), torch.float32)
    adapter.add_lora(LoraConfig(rank=2, alpha=2))
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, parameter in adapter.transformer.named_parameters():
            if "lora_B" in name:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.1)
    return adapter


def forward_and_grads(adapter, noise, sigma, cond):
    """One velocity forward and backward of a squared loss: (output, LoRA gradients)."""
    adapter.transformer.zero_grad(set_to_none=True)
    out = adapter.velocity(adapter.transformer, noise, sigma, cond)
    (out ** 2).mean().backward()
    return out.detach(), [p.grad.clone() for p in adapter.transformer.parameters() if p.requires_grad]


@pytest.fixture(scope="module")
def adapter(tiny_kontext_dir):
    return adapter_with_random_lora(ModelConfig(path=str(tiny_kontext_dir), max_sequence_length=32))


@pytest.fixture(scope="module")
def batch(adapter):
    sources = torch.rand(len(PROMPTS), 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))
    cond = adapter.condition(PROMPTS, sources)
    noise = adapter.noise(len(PROMPTS), SIZE, SIZE, torch.Generator().manual_seed(2))
    return cond, noise


class AttentionSpy:
    """Wraps diffusers' ``dispatch_attention_fn`` in a transformer module (FLUX by default): keeps the (q, k, v,
    attention mask, output) of every call."""

    def __init__(self, monkeypatch, module=None):
        import diffusers.models.transformers.transformer_flux as flux

        module = module or flux
        self.calls, real = [], module.dispatch_attention_fn

        def spy(query, key, value, attn_mask=None, **kwargs):
            output = real(query, key, value, attn_mask=attn_mask, **kwargs)
            mask = None if attn_mask is None else attn_mask.detach()
            self.calls.append((query.detach(), key.detach(), value.detach(), mask, output.detach()))
            return output

        monkeypatch.setattr(module, "dispatch_attention_fn", spy)

    def reference_map(self, text_mask: torch.Tensor, num_target: int, rows: slice = slice(None)) -> torch.Tensor:
        """Brute force: the full attention matrix of every call in float64 (a bool attention mask: False keys get
        no probability), the selected text rows' mass on the target tokens summed over heads, rows and calls,
        renormalised per sample. ``rows``: the batch rows the samples of ``text_mask`` are (true CFG: a half)."""
        sums = torch.zeros(text_mask.shape[0], num_target, dtype=torch.float64)
        text_len = text_mask.shape[1]
        for query, key, value, attn_mask, output in self.calls:  # (B, S, H, D), text tokens first
            scores = torch.einsum("bqhd,bkhd->bhqk", query.double(), key.double()) / math.sqrt(query.shape[-1])
            if attn_mask is not None:
                scores = scores.masked_fill(~attn_mask.bool(), float("-inf"))
            probs = scores.softmax(-1)
            # the reconstructed attention IS the model's: it reproduces the attention output
            keys, head_dim = key.shape[1], query.shape[-1]
            assert_close(torch.einsum("bhqk,bkhd->bqhd", probs, value.double()), output.double(),
                         dtype=output.dtype, accumulations=keys * head_dim, growth="linear",
                         why="float32 attention vs a float64 softmax: head_dim-long dot products, keys-long sums")
            selected = probs[rows, :, :text_len, text_len:text_len + num_target] * text_mask[:, None, :, None]
            sums += selected.sum(dim=(1, 2))
        return sums / sums.sum(dim=1, keepdim=True)


def test_in_mask_fraction_matches_numpy():
    rng = np.random.default_rng(0)
    maps, masks = rng.random((6, 40)), rng.random((6, 40)) > 0.6
    maps[2] = np.nan  # nothing recorded for this sample
    masks[4] = False
    expected = [(m * k).sum() / m.sum() for m, k in zip(maps, masks)]
    got = attention_fraction_inside(torch.from_numpy(maps), torch.from_numpy(masks))
    assert_close(got, expected, dtype=torch.float64, accumulations=40, equal_nan=True,
                 why="float64 sums of 40 products, in another order than numpy's")
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
    assert_close(parts["attention_concentration"][:2], expected[:2], dtype=torch.float32, accumulations=rows * cols,
                 why="the maps are float32: a sum of 20 products against numpy's float64")
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


@pytest.mark.parity
def test_outputs_and_gradients_are_bit_identical(adapter, batch):
    cond, noise = batch
    sigma = torch.tensor([0.6])
    first_attention = adapter.transformer.transformer_blocks[0].attn
    original = first_attention.processor

    plain, plain_grads = forward_and_grads(adapter, noise, sigma, cond)
    recorder = AttentionRecorder(adapter.transformer)
    AttentionRecorder(adapter.transformer)  # a second recorder takes the wrappers over: never wrapped twice
    with pytest.raises(RuntimeError, match="taken over"), recorder.recording(torch.ones(3, 32, dtype=torch.bool), 1):
        pass
    recorder.install()
    assert first_attention.processor.inner is original
    try:
        idle, idle_grads = forward_and_grads(adapter, noise, sigma, cond)
        mask = adapter.phrase_token_mask(PROMPTS, ["cat", "sky", "hat"])
        recorder = AttentionRecorder(adapter.transformer)
        with recorder.recording(mask, noise.shape[1]):
            recorded, recorded_grads = forward_and_grads(adapter, noise, sigma, cond)
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


@pytest.mark.parity
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
    assert (maps[:2] >= 0).all()
    assert_close(maps[:2].sum(1), torch.ones(2), dtype=torch.float32, accumulations=noise.shape[1],
                 why="a renormalised float32 map summed over its tokens")
    reference = spy.reference_map(mask, noise.shape[1])
    keys = spy.calls[0][1].shape[1]  # softmax over every key, summed over layers × calls in float32
    assert_close(maps[:2].double(), reference[:2], dtype=torch.float32, accumulations=keys * len(spy.calls),
                 growth="linear", why="recorded float32 probabilities vs a float64 softmax, summed over layers")
    with pytest.raises(RuntimeError, match="nothing recorded"):
        recorder.take()


@pytest.mark.parity
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
    assert_close(maps.double(), spy.reference_map(mask, num_target), dtype=torch.float32,
                 accumulations=(text_len + image_len) * dim, growth="linear",
                 why="float32 scores (dim-long dot products) and softmax over every key vs float64")


def test_misuse_and_unsupported_models_get_clear_errors(adapter):
    from diffusers.models.transformers.transformer_flux import FluxAttention

    other = FluxAttention(query_dim=8, heads=2, dim_head=4, processor=SimpleNamespace())
    with pytest.raises(NotImplementedError, match="SimpleNamespace"):
        AttentionRecorder(torch.nn.Sequential(other))
    supported = FluxAttention(query_dim=8, heads=2, dim_head=4)
    AttentionRecorder(torch.nn.Sequential(supported))
    supported.set_attention_backend("native")  # diffusers sets it on the processor: it reaches the wrapped one
    assert supported.processor.inner._attention_backend == "native"
    with pytest.raises(NotImplementedError, match="FLUX and Qwen-Image transformers only"):
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


# ---------------------------------------------------------------------------------------------- Qwen-Image-Edit
QWEN_SIZE = 32  # a 16x16 token grid on the tiny Qwen VAE (scale factor 1)
# different lengths: the short prompt is padded, so the transformer gets a text mask (masked keys)
QWEN_PROMPTS = ["make the cat red", "turn the small sky above the old wooden house into a deep blue"]


@pytest.fixture(scope="module")
def qwen_adapter(tiny_qwen_dir):
    """The tiny Qwen-Image-Edit model with true CFG (a 2B-row transformer batch) and a random LoRA."""
    return adapter_with_random_lora(ModelConfig(adapter="qwen_image_edit", path=str(tiny_qwen_dir), true_cfg_scale=4.0))


@pytest.fixture(scope="module")
def qwen_batch(qwen_adapter):
    sources = torch.rand(len(QWEN_PROMPTS), 3, QWEN_SIZE, QWEN_SIZE, generator=torch.Generator().manual_seed(1))
    cond = qwen_adapter.condition(QWEN_PROMPTS, sources)
    noise = qwen_adapter.noise(len(QWEN_PROMPTS), QWEN_SIZE, QWEN_SIZE, torch.Generator().manual_seed(2))
    text_mask = qwen_adapter.phrase_token_mask(QWEN_PROMPTS, [["cat"], ["sky", "house"]], cond=cond)
    return cond, noise, text_mask


@pytest.mark.parity
def test_qwen_outputs_and_gradients_are_bit_identical_with_true_cfg(qwen_adapter, qwen_batch):
    cond, noise, text_mask = qwen_batch
    sigma = torch.tensor([0.6])
    first_attention = qwen_adapter.transformer.transformer_blocks[0].attn
    original = first_attention.processor

    plain, plain_grads = forward_and_grads(qwen_adapter, noise, sigma, cond)
    recorder = AttentionRecorder(qwen_adapter.transformer)
    try:
        idle, idle_grads = forward_and_grads(qwen_adapter, noise, sigma, cond)
        with recorder.recording(text_mask, noise.shape[1]):
            recorded, recorded_grads = forward_and_grads(qwen_adapter, noise, sigma, cond)
        maps = recorder.take()
    finally:
        recorder.remove()
    assert first_attention.processor is original
    assert maps.shape == (len(QWEN_PROMPTS), noise.shape[1]) and torch.isfinite(maps).all()
    for output, grads in ((idle, idle_grads), (recorded, recorded_grads)):
        assert torch.equal(output, plain)
        assert all(torch.equal(a, b) for a, b in zip(grads, plain_grads))


@pytest.mark.parity
def test_qwen_map_is_the_conditional_branch_and_equals_brute_force(qwen_adapter, qwen_batch, monkeypatch):
    """True CFG runs 2B rows (conditional first): the map equals a float64 softmax over the model's own q/k and
    attention mask on the FIRST B rows, over every layer and two denoising calls, and equals the map of a forward
    without the negative branch; the negative half gives a different map."""
    import diffusers.models.transformers.transformer_qwenimage as qwen

    cond, noise, text_mask = qwen_batch
    batch = len(QWEN_PROMPTS)
    recorder = AttentionRecorder(qwen_adapter.transformer)
    spy = AttentionSpy(monkeypatch, qwen)
    unguided = cond.select(slice(None))
    for name in ("negative_embeds", "negative_mask"):
        del unguided.per_sample[name]
    try:
        with torch.no_grad():
            with recorder.recording(text_mask, noise.shape[1]):
                for sigma in (0.9, 0.4):
                    qwen_adapter.velocity(qwen_adapter.transformer, noise, torch.tensor([sigma]), cond)
            maps = recorder.take()
            guided_calls, spy.calls = spy.calls, []
            with recorder.recording(text_mask, noise.shape[1]):
                for sigma in (0.9, 0.4):
                    qwen_adapter.velocity(qwen_adapter.transformer, noise, torch.tensor([sigma]), unguided)
            unguided_maps = recorder.take()
    finally:
        recorder.remove()
    spy.calls = guided_calls
    assert len(guided_calls) == 2 * len(qwen_adapter.transformer.transformer_blocks)
    query, _, _, attn_mask, _ = guided_calls[0]
    assert query.shape[0] == 2 * batch  # conditional + negative rows in one forward
    assert attn_mask is not None and not attn_mask[:batch].all()  # padded text keys are masked out
    keys = guided_calls[0][1].shape[1]
    assert_close(maps.double(), spy.reference_map(text_mask, noise.shape[1], slice(0, batch)), dtype=torch.float32,
                 accumulations=keys * len(guided_calls), growth="linear",
                 why="recorded float32 probabilities vs a float64 softmax, summed over layers × calls")
    assert_close(unguided_maps, maps, dtype=torch.float32, accumulations=keys * len(guided_calls),
                 why="the same rows in a batch of B vs 2B rows: batch-dependent kernel blocking")
    negative = spy.reference_map(text_mask, noise.shape[1], slice(batch, None))
    assert (negative - maps.double()).abs().max() > 1e-3


@pytest.mark.parity
def test_qwen_batch_rule_records_the_first_block_only(qwen_adapter):
    """One attention layer on random inputs: a 2B-row call records what a B-row call of its first block records;
    a batch that is not a multiple of B is refused."""
    transformer = qwen_adapter.transformer
    attention = transformer.transformer_blocks[0].attn
    generator = torch.Generator().manual_seed(3)
    text_len, grid = 5, (1, 3, 4)
    rotary = transformer.pos_embed([[grid, grid]] * 4, max_txt_seq_len=text_len, device=torch.device("cpu"))
    text = torch.randn(4, text_len, transformer.inner_dim, generator=generator)
    image = torch.randn(4, 24, transformer.inner_dim, generator=generator)
    padding = torch.ones(4, text_len, dtype=torch.bool)
    padding[1, 3:] = False
    mask = torch.zeros(2, text_len, dtype=torch.bool)
    mask[:, :3] = True

    def record(rows):
        with torch.no_grad(), recorder.recording(mask, 12):
            attention(hidden_states=image[rows], encoder_hidden_states=text[rows],
                      encoder_hidden_states_mask=padding[rows], image_rotary_emb=rotary)
        return recorder.take()

    recorder = AttentionRecorder(transformer)
    try:
        stacked, first = record(slice(0, 4)), record(slice(0, 2))
        assert_close(stacked, first, dtype=torch.float32, accumulations=text_len + 24,
                     why="the same rows in a 4-row vs a 2-row batch: softmax sums over 29 keys in another blocking")
        assert (stacked - record(slice(2, 4))).abs().max() > 1e-3
        with pytest.raises(ValueError, match="stacked copies"):
            record(slice(0, 3))
    finally:
        recorder.remove()


# ---------------------------------------------------------------------------------------------- training + eval
@pytest.mark.parametrize(("model", "objective"), [("qwen_image_edit", "grpo"), ("flux_kontext", "nft")])
def test_training_step_and_eval_with_the_attention_reward(model, objective, request, edit_dataset_dir, tmp_path,
                                                          monkeypatch):
    """One step with only ``attention_concentration`` (Qwen: GRPO with true CFG) and eval.every=1: training and the
    eval rollouts record the phrase attention, and the eval reward is the recorded maps' concentration."""
    import json

    import train.trainers.heldout as evaluation
    from train.main import run
    from train.rewards import REWARDS

    eval_inputs = []

    def capture(*args, **kwargs):
        eval_inputs.append(RewardInputs(*args, **kwargs))
        return eval_inputs[-1]

    monkeypatch.setattr(evaluation, "RewardInputs", capture)
    path = request.getfixturevalue("tiny_qwen_dir" if model == "qwen_image_edit" else "tiny_kontext_dir")
    config = Path(__file__).resolve().parents[2] / "train" / "configs" / "tiny_kontext.yaml"
    extra = ["objective.regularizer.enabled=false"] if objective == "grpo" else []
    run(str(config), [f"objective.name={objective}", f"model.adapter={model}", f"model.path={path}",
                      f"data.dataset={edit_dataset_dir}", f"output_dir={tmp_path}", "train.max_steps=1",
                      "train.groups_per_step=1", "train.seed=1", "sampler.num_steps=2", "sampler.sde_window=[0, 2]",
                      "sampler.train_steps=1", "eval.num_samples=2", "eval.every=1", "checkpoint.every=0",
                      "rewards.weights={attention_concentration: 1.0}", "logging.progress=false",
                      "logging.tensorboard=false", *extra])
    metrics = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [1] and np.isfinite(metrics[0]["loss"])
    assert 0 <= metrics[0]["reward_attention_concentration"] <= 1
    (inputs,) = eval_inputs  # two eval samples, one micro-batch
    maps, grid = inputs.extras["attention"], inputs.extras["attention_grid"]
    assert maps.shape == (2, grid[0] * grid[1]) and torch.isfinite(maps).all()
    assert_close(maps.sum(1), torch.ones(2), dtype=torch.float32, accumulations=grid[0] * grid[1],
                 why="a renormalised float32 map summed over its tokens")
    concentration = REWARDS["attention_concentration"]()(inputs)
    assert_close(metrics[0]["eval_reward_mean"], float(concentration.nanmean()), dtype=torch.float32,
                 accumulations=2, why="the mean of 2 float32 rewards, logged as a Python float")
