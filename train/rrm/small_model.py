"""A small, randomly initialised Qwen2.5-VL for CPU runs of the RRM (`editkit rrm demo`, `editkit rrm init-model`).

Same classes and files as ``Qwen/Qwen2.5-VL-7B-Instruct`` (``from_pretrained`` loads it, so do the MLLM client's
transformers backend and the trainers). The tokenizer is byte-level (every string encodes) plus ``phrases``:
multi-character tokens for text that recurs verbatim (the prompt's sentences, the JSON skeleton of the trajectory
format), so a trajectory is tens of tokens instead of hundreds of bytes — what makes training in minutes possible.
"""
from __future__ import annotations

import json
from pathlib import Path

SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>",
           "<|video_pad|>"]
# Qwen2-VL's chat template as shipped with the checkpoints (system prompt added when absent).
CHAT_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def format_phrases(prompt_text: str, trajectory_examples: list[str]) -> list[str]:
    """Phrases worth one token each: the prompt split at its variable parts, and the JSON pieces of trajectories."""
    import re

    phrases = [p for p in re.split(r"\$\w+", prompt_text) if p]
    for example in trajectory_examples:
        # quoted strings with their JSON punctuation; digits stay single characters so every score is one token
        phrases += [p for p in re.findall(r'[{}\[\],:]*"[^"]*"[{}\[\],:]*', example)]
    return list(dict.fromkeys(phrases))


def byte_vocab() -> dict[str, int]:
    """The byte-level alphabet (256 printable stand-ins for the bytes): every string encodes with zero merges."""
    from tokenizers.pre_tokenizers import ByteLevel

    return {char: index for index, char in enumerate(sorted(ByteLevel.alphabet()))}


def byte_level_qwen_tokenizer(tokenizer_class=None, phrases: list[str] | None = None, special: list[str] = SPECIAL):
    """A Qwen2 tokenizer (``tokenizer_class``, default ``Qwen2Tokenizer``) over the byte alphabet with no merges, the
    ``special`` tokens (the first is padding, the third the end of a turn) and, optionally, ``phrases`` as extra
    multi-character tokens; returns it and the special tokens' ids."""
    if tokenizer_class is None:
        from transformers import Qwen2Tokenizer as tokenizer_class

    vocab = byte_vocab()
    for token in special:
        vocab[token] = len(vocab)
    tokenizer = tokenizer_class(vocab=vocab, merges=[], unk_token=None, bos_token=None, eos_token=special[2],
                                pad_token=special[0])
    tokenizer.add_special_tokens({"additional_special_tokens": special[1:]})
    if phrases:
        tokenizer.add_tokens(sorted(set(phrases), key=len, reverse=True))
    return tokenizer, {token: tokenizer.convert_tokens_to_ids(token) for token in special}


def build_qwen2_5_vl(directory: str | Path, *, hidden_size: int, num_layers: int, vision_depth: int = 1,
                     vision_hidden_size: int = 32, phrases: list[str] | None = None, seed: int = 0,
                     max_pixels: int = 56 * 56, chat_template: str = CHAT_TEMPLATE) -> Path:
    """A randomly initialised Qwen2.5-VL (model + processor + byte-level tokenizer) saved in ``directory``.

    ``max_pixels`` caps the image processor's resize (56x56 = 4 merged vision tokens). The text ``rope_parameters``
    have ``mrope_section`` summing to ``head_dim / 2``; the special token ids in the config are the tokenizer's."""
    import torch
    from transformers import (Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLProcessor,
                              Qwen2VLImageProcessor, Qwen2VLVideoProcessor)

    directory = Path(directory)
    tokenizer, ids = byte_level_qwen_tokenizer(phrases=phrases)
    heads = 2
    head_dim = hidden_size // heads
    quarter = head_dim // 4  # mrope_section splits head_dim/2 rotary frequencies over (temporal, height, width)
    config = Qwen2_5_VLConfig(
        text_config=dict(
            vocab_size=len(tokenizer), hidden_size=hidden_size, intermediate_size=2 * hidden_size,
            num_hidden_layers=num_layers, num_attention_heads=heads, num_key_value_heads=1,
            max_position_embeddings=4096, bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"],
            pad_token_id=ids["<|endoftext|>"],
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                             "mrope_section": [head_dim // 2 - 2 * quarter, quarter, quarter]}),
        vision_config=dict(depth=vision_depth, hidden_size=vision_hidden_size, intermediate_size=2 * vision_hidden_size,
                           num_heads=2, out_hidden_size=hidden_size, patch_size=14, spatial_merge_size=2,
                           temporal_patch_size=2, window_size=56, fullatt_block_indexes=list(range(vision_depth))),
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=True)
    torch.manual_seed(seed)
    model = Qwen2_5_VLForConditionalGeneration(config).eval()
    model.generation_config.eos_token_id = ids["<|im_end|>"]
    model.generation_config.pad_token_id = ids["<|endoftext|>"]
    size = {"shortest_edge": 28 * 28, "longest_edge": max_pixels}
    processor = Qwen2_5_VLProcessor(
        image_processor=Qwen2VLImageProcessor(size=size, patch_size=14, merge_size=2, temporal_patch_size=2),
        video_processor=Qwen2VLVideoProcessor(size=size, patch_size=14, merge_size=2, temporal_patch_size=2),
        tokenizer=tokenizer, chat_template=chat_template)
    model.save_pretrained(directory)
    processor.save_pretrained(directory)
    return directory


def build_small_rrm(directory: str | Path, *, hidden_size: int = 64, num_layers: int = 2, vision_depth: int = 1,
                    phrases: list[str] | None = None, seed: int = 0, max_pixels: int = 56 * 56) -> Path:
    directory = build_qwen2_5_vl(directory, hidden_size=hidden_size, num_layers=num_layers, vision_depth=vision_depth,
                                 vision_hidden_size=32, phrases=phrases, seed=seed, max_pixels=max_pixels)
    (directory / "small_rrm.json").write_text(json.dumps({"hidden_size": hidden_size, "num_layers": num_layers,
                                                          "phrases": len(phrases or []), "seed": seed}))
    return directory
