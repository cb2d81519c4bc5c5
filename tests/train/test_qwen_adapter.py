"""The Qwen-Image-Edit adapter reproduces diffusers' pipelines (true CFG with norm rescale included), trains with
GRPO and NFT, and saves a LoRA the pipeline loads; every config in train/configs/ validates."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from tests.support import adapters
from tests.support.numerics import assert_close
from train.config import ModelConfig, load_config

REPO = Path(__file__).resolve().parents[2]
SIZE = 32  # training resolution of the tests: a 16x16 token grid on the tiny VAE (scale factor 1)


@pytest.fixture(scope="module")
def adapter(tiny_qwen_dir):
    from train.adapters import build_adapter

    return build_adapter(ModelConfig(adapter="qwen_image_edit", path=str(tiny_qwen_dir), true_cfg_scale=4.0),
                         torch.device("cpu"), torch.float32)


def _source(seed: int = 0):
    return adapters.random_image(seed, SIZE, SIZE)


def _ode(adapter, cond, noise, steps):
    return adapters.ode_final(adapter, cond, noise, steps, SIZE, SIZE)


@pytest.fixture
def small_condition_size(monkeypatch):
    """The pipelines resize the condition image to ~1024² whatever the output size: pin it to the test size."""
    import diffusers.pipelines.qwenimage.pipeline_qwenimage_edit as edit
    import diffusers.pipelines.qwenimage.pipeline_qwenimage_edit_plus as plus

    original = edit.calculate_dimensions
    monkeypatch.setattr(edit, "calculate_dimensions", lambda area, ratio: original(SIZE * SIZE, ratio))
    monkeypatch.setattr(plus, "VAE_IMAGE_SIZE", SIZE * SIZE)


def _chain(adapter, noise, cond) -> int:
    """The longest chain of float32 sums in one transformer call: per layer an inner-dimension dot product and a
    softmax over every key (target + condition image tokens + text tokens), times the layers."""
    keys = 2 * noise.shape[1] + cond.per_sample["prompt_embeds"].shape[1]
    return (adapter.transformer.inner_dim + keys) * len(adapter.transformer.transformer_blocks)


@pytest.mark.parity
def test_ode_rollout_with_true_cfg_matches_pipeline(adapter, small_condition_size):
    image, tensor = _source()
    cond = adapter.condition(["make it red"], tensor)
    assert cond.shared["img_shapes"] == [(1, 16, 16), (1, 16, 16)]  # target grid, then condition grid
    assert {"negative_embeds", "negative_mask"} <= set(cond.per_sample)
    noise = adapter.noise(1, SIZE, SIZE, torch.Generator().manual_seed(3))
    ours = _ode(adapter, cond, noise, 3)
    call = {"image": image, "prompt": "make it red", "negative_prompt": " ", "true_cfg_scale": 4.0, "height": SIZE,
            "width": SIZE, "num_inference_steps": 3, "latents": noise.clone()}
    latents = []  # the pipeline's latents after each step, then its decoded image

    def keep_latents(pipe, step, timestep, tensors):
        latents.append(tensors["latents"].clone())
        return {}

    pixels = adapter.pipe(**call, output_type="pt", callback_on_step_end=keep_latents).images
    chain = _chain(adapter, noise, cond)
    assert_close(ours, latents[-1], dtype=torch.float32, accumulations=chain, steps=3,
                 why="the same float32 transformer called another way: (inner dim + keys) × layers, 3 steps")
    # decoding (latents_mean/std are not 0/1 in the tiny VAE) equals the pipeline's own output image
    assert_close(adapter.decode(ours, SIZE, SIZE), pixels, dtype=torch.float32, accumulations=chain, steps=3 + 1,
                 why="the rollout's differences through the VAE decoder (one more chain of sums)")
    # without guidance the rollout differs: the negative branch really takes part
    plain = adapter.condition(["make it red"], tensor)
    plain.per_sample = {k: v for k, v in plain.per_sample.items() if not k.startswith("negative")}
    assert (_ode(adapter, plain, noise, 3) - ours).abs().max() > 1e-3


@pytest.mark.parity
def test_plus_pipeline_checkpoint_matches_its_pipeline(adapter, tmp_path, small_condition_size):
    """A QwenImageEditPlusPipeline checkpoint whose transformer has ``zero_cond_t`` (as Qwen-Image-Edit-2511's):
    the condition tokens get timestep 0, which the transformer reads from ``img_shapes``."""
    from diffusers import QwenImageEditPlusPipeline, QwenImageTransformer2DModel

    from train.adapters import build_adapter

    torch.manual_seed(0)
    transformer = QwenImageTransformer2DModel.from_config({**adapter.transformer.config, "zero_cond_t": True})
    components = {**adapter.pipe.components, "transformer": transformer}
    QwenImageEditPlusPipeline(**components).save_pretrained(tmp_path / "plus")
    plus = build_adapter(ModelConfig(adapter="qwen_image_edit", path=str(tmp_path / "plus")), torch.device("cpu"),
                         torch.float32)
    assert type(plus.pipe).__name__ == "QwenImageEditPlusPipeline" and plus.transformer.config.zero_cond_t
    image, tensor = _source(1)
    noise = plus.noise(1, SIZE, SIZE, torch.Generator().manual_seed(4))
    cond = plus.condition(["add a hat"], tensor)
    ours = _ode(plus, cond, noise, 2)
    theirs = plus.pipe(image=image, prompt="add a hat", negative_prompt=" ", true_cfg_scale=4.0, height=SIZE,
                       width=SIZE, num_inference_steps=2, latents=noise.clone(), output_type="latent").images
    assert_close(ours, theirs, dtype=torch.float32, accumulations=_chain(plus, noise, cond), steps=2,
                 why="the same float32 transformer called another way: (inner dim + keys) × layers, 2 steps")


@pytest.mark.parity
def test_padded_batch_equals_single_samples(adapter):
    """Prompts of different lengths share one padded text length; the mask keeps each sample's velocity its own."""
    _, first = _source(2)
    _, second = _source(3)
    prompts = ["red", "turn the small wooden box on the left into a shiny golden treasure chest"]
    batch = adapter.condition(prompts, torch.cat([first, second]))
    assert not batch.per_sample["prompt_mask"][0].all()  # the short prompt is padded
    x = adapter.noise(2, SIZE, SIZE, torch.Generator().manual_seed(5))
    sigma = torch.tensor([0.7])
    adapters.assert_batch_equals_single_samples(
        adapter, batch, prompts, [first, second], x, sigma, accumulations=_chain(adapter, x, batch),
        why="one velocity call, batch of 2 (padded) vs 1: batch-dependent kernel blocking")
    # selecting and repeating (a prompt -> its group) keeps shapes consistent
    group = batch.select(torch.tensor([1, 1, 0]))
    assert adapter.velocity(adapter.transformer, x[[1, 1, 0]], sigma, group).shape == (3, 256, 16)


def test_phrase_token_mask_marks_the_phrase_in_the_encoded_sequence(adapter):
    """Checked against the token ids the text encoder really received (the pipeline's processor call, minus the
    dropped template prefix): the tiny tokenizer has one token per character, so the marked ids spell the phrase."""
    prompts = ["make the cat red", "Turn the SKY blue, the sky", "add a hat"]
    images = [_source(seed) for seed in (4, 5, 6)]
    cond = adapter.condition(prompts, torch.cat([tensor for _, tensor in images]))
    before = adapter.phrase_fallbacks
    mask = adapter.phrase_token_mask(prompts, [["cat"], "sky", ["dog"]], cond)
    assert mask.shape == cond.per_sample["prompt_embeds"].shape[:2] and mask.dtype == torch.bool
    pipe = adapter.pipe
    for row, (prompt, (image, _)) in enumerate(zip(prompts, images)):
        ids = pipe.processor(text=[pipe.prompt_template_encode.format(prompt)], images=image, padding=True,
                             return_tensors="pt")["input_ids"][0][pipe.prompt_template_encode_start_idx :]
        length = int(cond.per_sample["prompt_mask"][row].sum())
        assert ids.shape[0] == length and not mask[row, length:].any()
        marked = pipe.tokenizer.decode(ids[mask[row, :length]])
        assert marked == ["cat", "SKYsky", "add a hat"][row]  # "dog" is absent: the whole prompt instead
    assert adapter.phrase_fallbacks == before + 1


@pytest.mark.parity
def test_true_cfg_matches_closed_form():
    from train.adapters.qwen_image_edit import true_cfg

    rng = np.random.default_rng(0)
    cond, uncond = rng.normal(size=(2, 5, 7)), rng.normal(size=(2, 5, 7))
    for scale in (1.0, 2.5, 4.0):
        expected = np.empty_like(cond)
        for b in range(2):
            for t in range(5):  # per token: combine, then rescale to the conditional prediction's length
                combined = uncond[b, t] + scale * (cond[b, t] - uncond[b, t])
                expected[b, t] = combined / np.sqrt((combined**2).sum()) * np.sqrt((cond[b, t] ** 2).sum())
        ours = true_cfg(torch.from_numpy(cond), torch.from_numpy(uncond), scale)
        assert ours.dtype == torch.float32
        assert_close(ours, expected, dtype=torch.float32, accumulations=2 * 7 + 4, growth="linear",
                     why="float32 result of two 7-long sums of squares, a sqrt, a divide, a product")


def test_clear_errors_for_missing_or_foreign_checkpoints(adapter, tmp_path):
    from train.adapters import build_adapter

    def build(path):
        return build_adapter(ModelConfig(adapter="qwen_image_edit", path=str(path)), torch.device("cpu"),
                             torch.float32)

    with pytest.raises(RuntimeError, match="No weights can be downloaded here"):
        build(tmp_path)  # no model_index.json
    (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": "FluxKontextPipeline"}))
    with pytest.raises(ValueError, match="holds a FluxKontextPipeline"):
        build(tmp_path)
    with pytest.raises(NotImplementedError, match="needs the batch's Conditioning"):
        adapter.phrase_token_mask(["make the cat red"], [["cat"]])  # not the Kontext adapter's T5 version


@pytest.mark.parametrize("objective", ["grpo", "nft"])
def test_training_step_saves_a_lora_the_pipeline_loads(objective, adapter, tiny_qwen_dir, edit_dataset_dir, tmp_path):
    from train.main import run

    out = tmp_path / objective
    extra = ["objective.regularizer.enabled=false"] if objective == "grpo" else []
    run(str(REPO / "train" / "configs" / "tiny_kontext.yaml"),
        [f"objective.name={objective}", "model.adapter=qwen_image_edit", f"model.path={tiny_qwen_dir}",
         f"data.dataset={edit_dataset_dir}", f"output_dir={out}", "train.max_steps=1", "train.groups_per_step=1",
         "train.seed=1", "sampler.num_steps=2", "sampler.sde_window=[0, 2]", "sampler.train_steps=1",
         "eval.num_samples=1", "eval.every=1", "logging.progress=false", "logging.tensorboard=false", *extra])
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [1] and np.isfinite(metrics[0]["loss"])
    # seed 1 draws a row with finite rewards (seed 0 the full-mask row): the group is kept and the LoRA moves
    assert metrics[0]["kept_fraction"] == 1.0 and metrics[0]["grad_norm"] > 0
    assert "eval_bg_psnr" in metrics[0]
    if objective == "grpo":
        assert metrics[0]["ratio_first"] == 1.0  # on-policy, through the guided velocity
    else:
        assert "regularizer" in metrics[0]
    saved = adapters.assert_pipeline_loads_lora(adapter.pipe, out / "lora")
    if objective == "nft":  # the adapter's own loader (resume, lora.init_from) restores the exact values
        from peft.utils import get_peft_model_state_dict

        from train.adapters import build_adapter
        from train.config import LoraConfig

        fresh = build_adapter(ModelConfig(adapter="qwen_image_edit", path=str(tiny_qwen_dir)), torch.device("cpu"),
                              torch.float32)
        fresh.add_lora(LoraConfig(rank=4, alpha=4, init_from=str(out / "lora")))
        restored = get_peft_model_state_dict(fresh.transformer)
        assert restored.keys() == {k.removeprefix("transformer.") for k in saved}
        for key, value in restored.items():
            assert torch.equal(value, saved[f"transformer.{key}"]), key


def test_every_train_config_validates():
    from editkit.config import check_options
    from train.rewards import REWARDS

    paths = sorted((REPO / "train" / "configs").glob("*.yaml"))
    # trainer configs have a model or objective section (others here: accelerate's launch config, pretraining's)
    train_configs = [p for p in paths if {"model", "objective"} & set(yaml.safe_load(p.read_text()))]
    assert {"kontext.yaml", "qwen_image_edit.yaml", "tiny_kontext.yaml"} <= {p.name for p in train_configs}
    for path in train_configs:
        config = load_config(path)
        for name in config.rewards.weights:  # reward options are typed factory kwargs: check them without building
            check_options(REWARDS[name], config.rewards.options.get(name), f"rewards.options.{name}", str(path))
    qwen = load_config(REPO / "train" / "configs" / "qwen_image_edit.yaml")
    kontext = load_config(REPO / "train" / "configs" / "kontext.yaml")
    # CoCoEdit's training settings (docs/cocoedit.md)
    assert (qwen.model.adapter, qwen.model.path) == ("qwen_image_edit", "Qwen/Qwen-Image-Edit-2509")
    for config, lambdas, weights in ((kontext, (0.02, 0.02), {"pixel_consistency": 0.1, "mllm": 0.9}),
                                     (qwen, (0.8, 0.5), {"pixel_consistency": 0.2, "mllm": 0.8})):
        regularizer = config.objective.regularizer
        assert config.objective.name == "nft" and regularizer.enabled
        assert (regularizer.lambda_background, regularizer.lambda_edit) == lambdas
        assert config.rewards.weights == weights
        assert (config.train.groups_per_step, config.train.group_size, config.sampler.num_steps) == (24, 12, 10)
        assert config.data.resolution == [512, 512]



def test_qwen_config_runs_with_a_scripted_judge(tiny_qwen_dir, edit_dataset_dir, tmp_path):
    """train/configs/qwen_image_edit.yaml as shipped (NFT, λ 0.8/0.5, 0.2 pixel + 0.8 MLLM judge), shrunk to the
    tiny model: only the model path, the judge endpoint and the sizes are overridden."""
    from tests.support.scripted_server import ScriptedServer
    from train.main import run

    config_path = REPO / "train" / "configs" / "qwen_image_edit.yaml"
    judge = yaml.safe_load(config_path.read_text())["rewards"]["options"]["mllm"]["client"]["model"]
    with ScriptedServer(lambda request: str(2 + request.index % 7), models=(judge,)) as server:
        out = tmp_path / "run"
        run(str(config_path), [
            f"model.path={tiny_qwen_dir}", f"rewards.options.mllm.client.endpoint={server.url}", f"output_dir={out}",
            f"data.dataset={edit_dataset_dir}", "data.resolution=[32, 32]", "data.eval_size=2", "lora.rank=4",
            "lora.alpha=4", "sampler.num_steps=2", "sampler.sde_window=[0, 2]", "sampler.train_steps=1",
            "train.max_steps=1", "train.groups_per_step=1", "train.group_size=3", "train.micro_batch_size=3",
            "train.seed=1", "eval.every=0", "checkpoint.every=0", "logging.progress=false",
            "logging.tensorboard=false"])
        assert server.count == 3 and all(r.n_images == 2 for r in server.requests)  # source + edit per sample
    metrics = json.loads((out / "metrics.jsonl").read_text().splitlines()[0])
    assert np.isfinite(metrics["reward_mllm"]) and np.isfinite(metrics["reward_pixel_consistency"])
    assert metrics["kept_fraction"] == 1.0 and metrics["grad_norm"] > 0 and "regularizer" in metrics
    assert (out / "lora" / "pytorch_lora_weights.safetensors").exists()
