"""Tiny, randomly initialised FLUX.2 pipelines built offline: [klein] (Qwen3 text encoder) and [dev] (Mistral-3).

Every component of :class:`diffusers.Flux2KleinPipeline` / :class:`diffusers.Flux2Pipeline` (Flux2 transformer,
FLUX.2 VAE with its batch-norm latent statistics, text encoder and tokenizer, scheduler) is built from a small config
and saved with ``save_pretrained``, so the directory loads with ``from_pretrained(path)`` like the real checkpoints.

Structurally faithful where the adapter depends on it: the text encoders have as many layers as the real ones
(36 for Qwen3-4B/8B, 40 for Mistral-Small) so the pipelines' default ``text_encoder_out_layers`` ((9, 18, 27) and
(10, 20, 30)) exist, at hidden size 16 (the transformer's ``joint_attention_dim`` is 3 × 16); the VAE downsamples 4×
(scale factor 4: a 64×64 image, the smallest condition image the pipelines take, gives a 16×16 latent and 8×8 = 64
packed tokens of 4·8 channels); the transformer has
one dual-stream and one single-stream block and four RoPE axes (T, H, W, L). The VAE's batch-norm running statistics
are set to non-trivial values so a missing (de)normalisation shows up. ``variant="dev"`` has the guidance embedding
and a Mistral-3 text encoder with a Pixtral processor; ``variant="klein"`` no guidance embedding and
``is_distilled=False`` (true CFG), like FLUX.2 [klein] base.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

TEXT_HIDDEN = 16
KLEIN_LAYERS = 36  # Qwen3-4B / -8B: the pipeline reads hidden states 9, 18, 27
DEV_LAYERS = 40  # Mistral-Small-3.1: hidden states 10, 20, 30

QWEN3_CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n"
    "{% if enable_thinking is defined and enable_thinking is false %}<think>\n\n</think>\n\n{% endif %}{% endif %}"
)

# The system/user layout of Mistral-Small's template, enough for FLUX.2 [dev]'s text-only prompts
MISTRAL_CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{% if message['content'] is string %}{% set text = message['content'] %}"
    "{% else %}{% set text = message['content'] | selectattr('type', 'equalto', 'text') | map(attribute='text') "
    "| join('') %}{% endif %}"
    "{% if message['role'] == 'system' %}[SYSTEM_PROMPT]{{ text }}[/SYSTEM_PROMPT]"
    "{% elif message['role'] == 'user' %}[INST]{{ text }}[/INST]{% else %}{{ text }}{{ eos_token }}{% endif %}"
    "{% endfor %}"
)


def _transformer(guidance: bool, seed: int):
    import torch
    from diffusers import Flux2Transformer2DModel

    torch.manual_seed(seed)
    return Flux2Transformer2DModel(patch_size=1, in_channels=32, out_channels=None, num_layers=1, num_single_layers=1,
                                   attention_head_dim=8, num_attention_heads=2, joint_attention_dim=3 * TEXT_HIDDEN,
                                   timestep_guidance_channels=32, mlp_ratio=2.0, axes_dims_rope=(2, 2, 2, 2),
                                   guidance_embeds=guidance)


def _vae(seed: int):
    import torch
    from diffusers import AutoencoderKLFlux2

    torch.manual_seed(seed)
    vae = AutoencoderKLFlux2(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 3,
                             up_block_types=("UpDecoderBlock2D",) * 3, block_out_channels=(8, 8, 16), layers_per_block=1,
                             latent_channels=8, norm_num_groups=4, sample_size=32)
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():  # non-trivial latent statistics: a missing (de)normalisation shows up in tests
        vae.bn.running_mean.copy_(torch.randn(vae.bn.running_mean.shape, generator=generator) * 0.1)
        vae.bn.running_var.copy_(torch.rand(vae.bn.running_var.shape, generator=generator) + 0.5)
    return vae


def _scheduler():
    from diffusers import FlowMatchEulerDiscreteScheduler

    # FLUX.2's settings: dynamic (empirical-mu) shifting
    return FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=3.0, use_dynamic_shifting=True,
                                           time_shift_type="exponential")


def _klein_text(seed: int):
    import torch
    from transformers import Qwen2TokenizerFast, Qwen3Config, Qwen3ForCausalLM

    from train.rrm.small_model import byte_level_qwen_tokenizer

    tokenizer, _ = byte_level_qwen_tokenizer(Qwen2TokenizerFast,
                                             special=["<|endoftext|>", "<|im_start|>", "<|im_end|>"])
    tokenizer.chat_template = QWEN3_CHAT_TEMPLATE
    torch.manual_seed(seed)
    config = Qwen3Config(vocab_size=len(tokenizer), hidden_size=TEXT_HIDDEN, intermediate_size=32,
                         num_hidden_layers=KLEIN_LAYERS, num_attention_heads=2, num_key_value_heads=1, head_dim=8,
                         max_position_embeddings=1024, tie_word_embeddings=True,
                         pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    return Qwen3ForCausalLM(config).eval(), tokenizer


def _dev_text(seed: int, scratch: Path):
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, decoders
    from transformers import (AutoProcessor, Mistral3Config, Mistral3ForConditionalGeneration, PixtralImageProcessor,
                              PixtralProcessor, PreTrainedTokenizerFast)

    from train.rrm.small_model import byte_vocab

    vocab = byte_vocab()
    specials = ["<unk>", "<s>", "</s>", "[INST]", "[/INST]", "[SYSTEM_PROMPT]", "[/SYSTEM_PROMPT]", "[IMG]",
                "[IMG_BREAK]", "[IMG_END]", "<pad>"]
    for token in specials:
        vocab[token] = len(vocab)
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    backend.decoder = decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", bos_token="<s>", eos_token="</s>",
                                        pad_token="<pad>", additional_special_tokens=specials[3:10])
    processor = PixtralProcessor(image_processor=PixtralImageProcessor(patch_size=4, size={"longest_edge": 32}),
                                 tokenizer=tokenizer, patch_size=4, spatial_merge_size=1, image_token="[IMG]",
                                 image_break_token="[IMG_BREAK]", image_end_token="[IMG_END]",
                                 chat_template=MISTRAL_CHAT_TEMPLATE)
    processor.save_pretrained(scratch / "processor")
    processor = AutoProcessor.from_pretrained(scratch / "processor")
    torch.manual_seed(seed)
    config = Mistral3Config(
        text_config=dict(model_type="mistral", vocab_size=len(tokenizer), hidden_size=TEXT_HIDDEN,
                         intermediate_size=32, num_hidden_layers=DEV_LAYERS, num_attention_heads=2,
                         num_key_value_heads=1, head_dim=8, max_position_embeddings=1024,
                         pad_token_id=tokenizer.pad_token_id),
        vision_config=dict(model_type="pixtral", hidden_size=8, intermediate_size=16, num_hidden_layers=1,
                           num_attention_heads=2, head_dim=4, patch_size=4, image_size=32),
        image_token_index=tokenizer.convert_tokens_to_ids("[IMG]"), spatial_merge_size=1,
        vision_feature_layer=-1,
    )
    return Mistral3ForConditionalGeneration(config).eval(), processor


def build_tiny_flux2(directory: str | Path, variant: str = "klein", seed: int = 0) -> Path:
    """Build a tiny FLUX.2 [klein] (``variant="klein"``) or [dev] (``"dev"``) pipeline in ``directory``."""
    from diffusers import Flux2KleinPipeline, Flux2Pipeline

    directory = Path(directory)
    if variant == "klein":
        text_encoder, tokenizer = _klein_text(seed)
        pipe = Flux2KleinPipeline(scheduler=_scheduler(), vae=_vae(seed), text_encoder=text_encoder,
                                  tokenizer=tokenizer, transformer=_transformer(False, seed), is_distilled=False)
    elif variant == "dev":
        with tempfile.TemporaryDirectory() as scratch:
            text_encoder, processor = _dev_text(seed, Path(scratch))
        pipe = Flux2Pipeline(scheduler=_scheduler(), vae=_vae(seed), text_encoder=text_encoder, tokenizer=processor,
                             transformer=_transformer(True, seed))
    else:
        raise ValueError(f"unknown FLUX.2 variant {variant!r} (klein, dev)")
    directory.mkdir(parents=True, exist_ok=True)
    pipe.save_pretrained(directory)
    return directory


_BUILT: dict[str, Path] = {}


def cached_tiny_flux2(variant: str) -> Path:
    """One tiny FLUX.2 pipeline of ``variant`` per process (built into a temporary directory removed at exit), shared
    by the test files of the trainer, the exporter and the benchmarks."""
    if variant not in _BUILT:
        import atexit
        import shutil

        root = Path(tempfile.mkdtemp(prefix=f"tiny_flux2_{variant}_"))
        atexit.register(shutil.rmtree, root, ignore_errors=True)
        _BUILT[variant] = build_tiny_flux2(root / "pipe", variant)
    return _BUILT[variant]
