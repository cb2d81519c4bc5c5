"""A tiny, randomly initialised Qwen-Image 2.1 pipeline built offline.

Every component of :class:`diffusers.QwenImage21Pipeline` (block-causal single-stream transformer, the RGBA
Qwen-Image 2.1 VAE, a Qwen3-VL text encoder with its processor and tokenizer, scheduler) is built from a small config
and saved with ``save_pretrained``, so the directory loads with ``QwenImage21Pipeline.from_pretrained(path)``.

Faithful where the adapter depends on it: the pipeline's fixed VAE scale factor 16 (the tiny VAE downsamples 16×
with four down-sampling levels), the Qwen3-VL vision merge of 2×2 patches of 16 px (one ``<|image_pad|>`` slot per
32×32 pixels = 2×2 latent tokens), the 4-channel (RGBA) VAE input and output, ``causal_condition``. A 64×64 image
gives a 4×4 latent grid (16 tokens of ``z_dim = 8`` channels) and 4 vision slots. The pipeline resizes condition
images to ``calculate_dimensions(output_resolution², ratio)`` (multiples of 32): tests pass ``output_resolution``
so that this keeps their size.
"""
from __future__ import annotations

import tempfile
from pathlib import Path


CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
TEXT_HIDDEN = 16
Z_DIM = 8


def _text_encoder(seed: int, scratch: Path):
    import torch
    from transformers import (AutoProcessor, Qwen2TokenizerFast, Qwen2VLImageProcessor, Qwen3VLConfig,
                              Qwen3VLForConditionalGeneration, Qwen3VLProcessor, Qwen3VLVideoProcessor)

    from train.rrm.small_model import byte_level_qwen_tokenizer

    tokenizer, ids = byte_level_qwen_tokenizer(Qwen2TokenizerFast)
    size = {"shortest_edge": 32 * 32, "longest_edge": 256 * 256}
    processor = Qwen3VLProcessor(
        image_processor=Qwen2VLImageProcessor(size=size, patch_size=16, merge_size=2, temporal_patch_size=2,
                                              image_mean=[0.5] * 3, image_std=[0.5] * 3),
        video_processor=Qwen3VLVideoProcessor(size=size, patch_size=16, merge_size=2, temporal_patch_size=2),
        tokenizer=tokenizer, chat_template=CHAT_TEMPLATE)
    processor.save_pretrained(scratch / "processor")
    processor = AutoProcessor.from_pretrained(scratch / "processor")
    head_dim = 8
    config = Qwen3VLConfig(
        text_config=dict(vocab_size=len(tokenizer), hidden_size=TEXT_HIDDEN, intermediate_size=32,
                         num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1, head_dim=head_dim,
                         max_position_embeddings=4096, pad_token_id=ids["<|endoftext|>"],
                         rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 1, 1],
                                          "mrope_interleaved": True}),
        vision_config=dict(depth=2, hidden_size=16, intermediate_size=32, num_heads=2, patch_size=16,
                           spatial_merge_size=2, temporal_patch_size=2, out_hidden_size=TEXT_HIDDEN,
                           num_position_embeddings=64, deepstack_visual_indexes=[1]),
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    return Qwen3VLForConditionalGeneration(config).eval(), processor


def build_tiny_qwen_image_21(directory: str | Path, seed: int = 0) -> Path:
    """Build a tiny Qwen-Image 2.1 pipeline, save it to ``directory`` and return the path."""
    import torch
    from diffusers import (AutoencoderKLQwenImage21, FlowMatchEulerDiscreteScheduler, QwenImage21Pipeline,
                           QwenImage21Transformer2DModel)

    directory = Path(directory)
    with tempfile.TemporaryDirectory() as scratch:
        text_encoder, processor = _text_encoder(seed, Path(scratch))
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed + 1)
    vae = AutoencoderKLQwenImage21(
        base_dim=4, decoder_base_dim=4, z_dim=Z_DIM, dim_mult=[1, 1, 1, 1, 1], num_res_blocks=1,
        temperal_downsample=[False, False, False, False],
        # non-trivial latent statistics, so a missing (de)normalisation shows up in tests
        latents_mean=(torch.randn(Z_DIM, generator=generator) * 0.1).tolist(),
        latents_std=(torch.rand(Z_DIM, generator=generator) + 0.5).tolist())
    transformer = QwenImage21Transformer2DModel(patch_size=1, in_channels=Z_DIM, out_channels=Z_DIM, num_layers=2,
                                                attention_head_dim=8, num_attention_heads=2,
                                                context_in_dim=TEXT_HIDDEN, mlp_ratio=2, axes_dims_rope=(2, 2, 4))
    pipe = QwenImage21Pipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(shift=1.0, use_dynamic_shifting=True, base_image_seq_len=256,
                                                  max_image_seq_len=4096, base_shift=0.5, max_shift=1.15),
        vae=vae, text_encoder=text_encoder, processor=processor, transformer=transformer)
    directory.mkdir(parents=True, exist_ok=True)
    pipe.save_pretrained(directory)
    return directory


_BUILT: dict[str, Path] = {}


def cached_tiny_qwen_image_21() -> Path:
    """One tiny Qwen-Image 2.1 pipeline per process (temporary directory removed at exit)."""
    if "pipe" not in _BUILT:
        import atexit
        import shutil

        root = Path(tempfile.mkdtemp(prefix="tiny_qwen_image_21_"))
        atexit.register(shutil.rmtree, root, ignore_errors=True)
        _BUILT["pipe"] = build_tiny_qwen_image_21(root / "pipe")
    return _BUILT["pipe"]
