"""A tiny, randomly initialised Qwen-Image-Edit pipeline built offline.

Every component of :class:`diffusers.QwenImageEditPipeline` (MMDiT transformer, Qwen-Image VAE, Qwen2.5-VL text
encoder with its tokenizer and processor, scheduler) is built from a small config and saved with
``save_pretrained``, so the directory loads with ``QwenImageEditPipeline.from_pretrained(path)`` (or
``DiffusionPipeline.from_pretrained``) exactly like ``Qwen/Qwen-Image-Edit``. ``plus=True`` saves the same components
as a ``QwenImageEditPlusPipeline`` (``Qwen/Qwen-Image-Edit-2509``'s class).

The VAE has ``z_dim=4`` and no down-sampling (VAE scale factor 1): an ``h×w`` image gives ``h/2 · w/2`` packed
tokens of ``4·4`` channels. The pipeline resizes its condition image to ~1024² whatever the output size
(slow for a tiny VAE): tests patch ``calculate_dimensions`` in ``diffusers.pipelines.qwenimage.pipeline_qwenimage_edit`` (Plus:
``VAE_IMAGE_SIZE`` / ``CONDITION_IMAGE_SIZE`` in ``pipeline_qwenimage_edit_plus``).
"""
from __future__ import annotations

import tempfile
from pathlib import Path


def build_tiny_qwen_image_edit(directory: str | Path, seed: int = 0, plus: bool = False) -> Path:
    """Build a tiny Qwen-Image-Edit pipeline, save it to ``directory`` and return the path."""
    import torch
    from diffusers import (
        AutoencoderKLQwenImage,
        FlowMatchEulerDiscreteScheduler,
        QwenImageEditPipeline,
        QwenImageEditPlusPipeline,
        QwenImageTransformer2DModel,
    )
    from transformers import (
        AutoProcessor,
        Qwen2_5_VLForConditionalGeneration,
        Qwen2VLProcessor,
    )

    from tests.support.tiny.qwen_vl import build_tiny_qwen2_5_vl

    directory = Path(directory)
    with tempfile.TemporaryDirectory() as scratch:
        vl = build_tiny_qwen2_5_vl(Path(scratch) / "vl", seed=seed)
        loaded = AutoProcessor.from_pretrained(vl)
        text_encoder = Qwen2_5_VLForConditionalGeneration.from_pretrained(vl)
    # the pipeline types its processor as Qwen2VLProcessor; Qwen2.5-VL uses the same one
    processor = Qwen2VLProcessor(image_processor=loaded.image_processor, video_processor=loaded.video_processor,
                                 tokenizer=loaded.tokenizer, chat_template=loaded.chat_template)
    torch.manual_seed(seed)
    pipeline_class = QwenImageEditPlusPipeline if plus else QwenImageEditPipeline
    pipe = pipeline_class(
        # Qwen-Image's scheduler settings (dynamic shift), so the sigma schedule is the real one
        scheduler=FlowMatchEulerDiscreteScheduler(shift=1.0, use_dynamic_shifting=True, base_image_seq_len=256,
                                                  max_image_seq_len=4096, base_shift=0.5, max_shift=1.15),
        # z_dim 4, no temporal downsampling: VAE scale factor 1; the transformer's 2x2 patches pack 4*4 channels.
        # Non-trivial latents_mean/std so a missing (de)normalisation shows up in tests.
        vae=AutoencoderKLQwenImage(base_dim=8, z_dim=4, dim_mult=[1], num_res_blocks=1, temperal_downsample=[],
                                   latents_mean=[0.1, -0.2, 0.05, 0.0], latents_std=[1.5, 0.8, 1.2, 2.0]),
        text_encoder=text_encoder,
        tokenizer=loaded.tokenizer,
        processor=processor,
        transformer=QwenImageTransformer2DModel(patch_size=2, in_channels=16, out_channels=4, num_layers=1,
                                                attention_head_dim=16, num_attention_heads=2, joint_attention_dim=32,
                                                axes_dims_rope=(4, 6, 6)),
    )
    directory.mkdir(parents=True, exist_ok=True)
    pipe.save_pretrained(directory)
    return directory
