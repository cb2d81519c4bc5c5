"""Grounding-DINO checkpoints built offline: a tiny random one for tests, a full-size random one for GPU timing.

``build_tiny_grounding_dino(dir)`` saves ``GroundingDinoForObjectDetection`` + ``GroundingDinoProcessor`` (a
``BertTokenizer`` over a small vocabulary, images resized to 128 px) so that ``from_pretrained(dir)`` loads it exactly
like ``IDEA-Research/grounding-dino-base``. ``build_grounding_dino_base(dir)`` uses the real grounding-dino-base
architecture (Swin-B 384 / window 12, BERT-base text encoder, 900 queries, 6+6 layers) with random weights and a
synthetic 30,522-token vocabulary: same compute as the real model, for timing only.
"""
from __future__ import annotations

from pathlib import Path

# Words a test or demo prompt may use; anything else becomes [UNK] (harmless for random weights).
TINY_WORDS = (
    "[PAD] [UNK] [CLS] [SEP] [MASK] . , a an the of main subject object cat dog car hat person man woman red blue "
    "green yellow square circle box ball tree sky shirt cup mug bottle flower house sign text"
).split()


def build_tiny_grounding_dino(directory: Path | str, seed: int = 0) -> Path:
    """Save a tiny random Grounding-DINO (~0.2 M parameters) with its processor into ``directory``."""
    from transformers import BertConfig, GroundingDinoConfig, SwinConfig

    vocab = {word: index for index, word in enumerate(TINY_WORDS)}
    config = GroundingDinoConfig(
        backbone_config=SwinConfig(window_size=7, embed_dim=8, depths=[1] * 4, num_heads=[1] * 4,
                                   out_indices=[2, 3, 4], out_features=["stage2", "stage3", "stage4"]),
        text_config=BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                               intermediate_size=32, max_position_embeddings=64),
        d_model=32,  # GroupNorm(32, d_model) needs a multiple of 32
        encoder_layers=1, decoder_layers=2, encoder_ffn_dim=32, decoder_ffn_dim=32,
        encoder_attention_heads=2, decoder_attention_heads=2, num_queries=30, max_text_len=64,
    )
    return _save(directory, config, vocab, {"shortest_edge": 128, "longest_edge": 192}, seed)


def build_grounding_dino_base(directory: Path | str, seed: int = 0) -> Path:
    """Save a RANDOM-weight model with grounding-dino-base's architecture (for GPU timing, not for masks)."""
    from transformers import BertConfig, GroundingDinoConfig, SwinConfig

    words = TINY_WORDS + [f"[unused{i}]" for i in range(30522 - len(TINY_WORDS))]
    vocab = {word: index for index, word in enumerate(words)}
    config = GroundingDinoConfig(
        backbone_config=SwinConfig(image_size=384, embed_dim=128, depths=[2, 2, 18, 2], num_heads=[4, 8, 16, 32],
                                   window_size=12, out_indices=[2, 3, 4], out_features=["stage2", "stage3", "stage4"]),
        text_config=BertConfig(vocab_size=30522),  # bert-base-uncased
        d_model=256, encoder_layers=6, decoder_layers=6, encoder_ffn_dim=2048, decoder_ffn_dim=2048,
        num_queries=900, max_text_len=256,
    )
    return _save(directory, config, vocab, {"shortest_edge": 800, "longest_edge": 1333}, seed)


def _save(directory: Path | str, config, vocab: dict[str, int], size: dict[str, int], seed: int) -> Path:
    import torch
    from transformers import (BertTokenizer, GroundingDinoForObjectDetection, GroundingDinoImageProcessor,
                              GroundingDinoProcessor)

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    GroundingDinoForObjectDetection(config).save_pretrained(directory)
    processor = GroundingDinoProcessor(image_processor=GroundingDinoImageProcessor(size=size),
                                       tokenizer=BertTokenizer(vocab=vocab, do_lower_case=True))
    processor.save_pretrained(directory)
    return directory
