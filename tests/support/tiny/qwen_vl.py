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


def build_tiny_qwen2_5_vl(directory: str | Path, *, hidden_size: int = 32, num_layers: int = 1, seed: int = 0,
                          max_pixels: int = 56 * 56) -> Path:
    """Build a tiny Qwen2.5-VL checkpoint in ``directory`` and return the path (the RRM's builder with a smaller
    vision tower and the full Qwen2-VL chat template).

    ``max_pixels`` caps the image processor's resize (56x56 = 4 merged vision tokens), keeping tests fast.
    """
    from train.rrm.small_model import build_qwen2_5_vl

    return build_qwen2_5_vl(directory, hidden_size=hidden_size, num_layers=num_layers, vision_depth=1,
                            vision_hidden_size=16, seed=seed, max_pixels=max_pixels, chat_template=CHAT_TEMPLATE)
