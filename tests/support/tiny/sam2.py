"""SAM2 checkpoints built offline: a tiny random one for tests, a full-size random one for GPU timing.

``build_tiny_sam2(dir)`` saves ``Sam2Model`` + ``Sam2Processor`` at 128 px input so that ``from_pretrained(dir)``
loads it exactly like ``facebook/sam2.1-hiera-large``. ``build_sam2_hiera_large(dir)`` copies the Hiera-L values of
``sam2.1_hiera_l.yaml`` (embed 144, stages 2/6/36/4, global blocks 23/33/43, windows 8/4/16/8) at 1024 px, with random
weights: same compute as the real model, for timing only.
"""
from __future__ import annotations

from pathlib import Path


def build_tiny_sam2(directory: Path | str, seed: int = 0, image_size: int = 128) -> Path:
    """Save a tiny random SAM2 (~0.1 M parameters) with its processor into ``directory``."""
    from transformers import Sam2HieraDetConfig

    # Block 3 is the global-attention block: it must not be the first block of a query-pooling stage.
    backbone = Sam2HieraDetConfig(
        hidden_size=8, num_attention_heads=1, image_size=[image_size, image_size], blocks_per_stage=[1, 1, 2, 1],
        embed_dim_per_stage=[8, 16, 32, 64], num_attention_heads_per_stage=[1, 1, 1, 1],
        window_size_per_stage=[4, 4, 4, 4], global_attention_blocks=[3],
        window_positional_embedding_background_size=[2, 2],
    )
    return _save(directory, backbone, image_size, hidden=32, mlp_dim=64, heads=2, seed=seed)


def build_sam2_hiera_large(directory: Path | str, seed: int = 0) -> Path:
    """Save a RANDOM-weight model with sam2.1-hiera-large's architecture (for GPU timing, not for masks)."""
    from transformers import Sam2HieraDetConfig

    backbone = Sam2HieraDetConfig(
        hidden_size=144, num_attention_heads=2, image_size=[1024, 1024], blocks_per_stage=[2, 6, 36, 4],
        embed_dim_per_stage=[144, 288, 576, 1152], num_attention_heads_per_stage=[2, 4, 8, 16],
        window_size_per_stage=[8, 4, 16, 8], global_attention_blocks=[23, 33, 43],
        window_positional_embedding_background_size=[7, 7],
    )
    return _save(directory, backbone, 1024, hidden=256, mlp_dim=2048, heads=8, seed=seed)


def _save(directory: Path | str, backbone, image_size: int, hidden: int, mlp_dim: int, heads: int, seed: int) -> Path:
    import torch
    from transformers import (Sam2Config, Sam2ImageProcessor, Sam2MaskDecoderConfig, Sam2Model, Sam2Processor,
                              Sam2PromptEncoderConfig, Sam2VisionConfig)

    s = image_size
    vision = Sam2VisionConfig(backbone_config=backbone, backbone_channel_list=backbone.embed_dim_per_stage[::-1],
                              backbone_feature_sizes=[[s // 4, s // 4], [s // 8, s // 8], [s // 16, s // 16]],
                              fpn_hidden_size=hidden)
    config = Sam2Config(
        vision_config=vision,
        prompt_encoder_config=Sam2PromptEncoderConfig(hidden_size=hidden, image_size=s, patch_size=16),
        mask_decoder_config=Sam2MaskDecoderConfig(hidden_size=hidden, mlp_dim=mlp_dim, num_attention_heads=heads,
                                                  iou_head_hidden_dim=hidden),
    )
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    Sam2Model(config).save_pretrained(directory)
    image_processor = Sam2ImageProcessor(size={"height": s, "width": s}, mask_size={"height": s // 4, "width": s // 4})
    Sam2Processor(image_processor=image_processor).save_pretrained(directory)
    return directory
