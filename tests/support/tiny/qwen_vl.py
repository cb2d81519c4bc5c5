"""A tiny, randomly initialised Qwen2.5-VL (model + processor + tokenizer) built offline.

The directory loads exactly like ``Qwen/Qwen2.5-VL-7B-Instruct``: ``Qwen2_5_VLForConditionalGeneration
.from_pretrained(path)`` and ``AutoProcessor.from_pretrained(path)``. Its generations are random tokens, which is
what tests of the MLLM client's fallback paths need.

Gotchas: the text ``rope_parameters`` need ``mrope_section`` summing to ``head_dim / 2``; the
image/video/vision-start/end token ids in the config must equal the tokenizer's ids for those special tokens; the
tokenizer is a byte-level BPE over the 256 byte characters with no merges (``Qwen2Tokenizer(vocab=dict, merges=[])``).
"""
from __future__ import annotations

from pathlib import Path

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                  "<|image_pad|>", "<|video_pad|>"]

# Qwen2-VL's chat template (the one shipped with the real checkpoints), so prompts are formatted identically.
CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}{% if add_vision_id %}Picture {{ image_count.value }}: "
    "{% endif %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def _byte_vocab() -> dict[str, int]:
    """The byte-level alphabet (256 printable stand-ins for the bytes): every string encodes with zero merges."""
    from tokenizers.pre_tokenizers import ByteLevel

    return {char: index for index, char in enumerate(sorted(ByteLevel.alphabet()))}


def build_tiny_qwen2_5_vl(directory: str | Path, *, hidden_size: int = 32, num_layers: int = 1, seed: int = 0,
                          max_pixels: int = 56 * 56) -> Path:
    """Build a tiny Qwen2.5-VL checkpoint in ``directory`` and return the path.

    ``max_pixels`` caps the image processor's resize (56x56 = 4 merged vision tokens), keeping tests fast.
    """
    import torch
    from transformers import (Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLProcessor,
                              Qwen2Tokenizer, Qwen2VLImageProcessor, Qwen2VLVideoProcessor)

    directory = Path(directory)
    vocab = _byte_vocab()
    for token in SPECIAL_TOKENS:
        vocab[token] = len(vocab)
    tokenizer = Qwen2Tokenizer(vocab=vocab, merges=[], unk_token=None, bos_token=None, eos_token="<|im_end|>",
                               pad_token="<|endoftext|>")
    tokenizer.add_special_tokens({"additional_special_tokens": SPECIAL_TOKENS[1:]})
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in SPECIAL_TOKENS}

    num_heads = 2
    head_dim = hidden_size // num_heads
    quarter = head_dim // 4  # mrope_section splits head_dim/2 rotary frequencies over (temporal, height, width)
    mrope_section = [head_dim // 2 - 2 * quarter, quarter, quarter]
    config = Qwen2_5_VLConfig(
        text_config=dict(
            vocab_size=len(tokenizer), hidden_size=hidden_size, intermediate_size=2 * hidden_size,
            num_hidden_layers=num_layers, num_attention_heads=num_heads, num_key_value_heads=1,
            max_position_embeddings=4096, bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"],
            pad_token_id=ids["<|endoftext|>"],
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": mrope_section},
        ),
        vision_config=dict(depth=1, hidden_size=16, intermediate_size=32, num_heads=2, out_hidden_size=hidden_size,
                           patch_size=14, spatial_merge_size=2, temporal_patch_size=2, window_size=56,
                           fullatt_block_indexes=[0]),
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    model = Qwen2_5_VLForConditionalGeneration(config).eval()
    model.generation_config.eos_token_id = ids["<|im_end|>"]
    model.generation_config.pad_token_id = ids["<|endoftext|>"]
    size = {"shortest_edge": 28 * 28, "longest_edge": max_pixels}
    processor = Qwen2_5_VLProcessor(
        image_processor=Qwen2VLImageProcessor(size=size, patch_size=14, merge_size=2, temporal_patch_size=2),
        video_processor=Qwen2VLVideoProcessor(size=size, patch_size=14, merge_size=2, temporal_patch_size=2),
        tokenizer=tokenizer, chat_template=CHAT_TEMPLATE,
    )
    model.save_pretrained(directory)
    processor.save_pretrained(directory)
    return directory
