"""A tiny randomly initialised transformers CLIP (``CLIPModel`` + ``CLIPProcessor``), saved with ``save_pretrained``.

The layout of the ``openai/clip-vit-*`` repositories (``config.json``, weights, ``preprocessor_config.json``,
``vocab.json``/``merges.txt``), so ``CLIPModel.from_pretrained(dir)`` / ``CLIPProcessor.from_pretrained(dir)`` load it
through exactly the code a real checkpoint uses. The tokenizer files are CLIP's real BPE vocabulary, rebuilt from the
copy open-clip ships in its package (no download); the image processor keeps CLIP's rule (shortest edge, bicubic,
centre crop, CLIP mean/std) at 32 pixels instead of 224.
"""
from __future__ import annotations

import gzip
import json
from pathlib import Path

CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]


def _bytes_to_unicode() -> dict[int, str]:
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    codes, extra = printable[:], 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            codes.append(256 + extra)
            extra += 1
    return dict(zip(printable, map(chr, codes)))


def write_clip_tokenizer_files(directory: Path) -> None:
    """``vocab.json`` + ``merges.txt`` of CLIP's BPE (49,408 tokens), from open-clip's bundled merge list."""
    import open_clip.tokenizer as oct

    lines = gzip.open(oct.default_bpe(), "rt", encoding="utf-8").read().split("\n")
    merges = [tuple(line.split()) for line in lines[1 : 49152 - 256 - 2 + 1]]
    base = list(_bytes_to_unicode().values())
    vocab = base + [v + "</w>" for v in base] + ["".join(m) for m in merges] + ["<|startoftext|>", "<|endoftext|>"]
    (directory / "vocab.json").write_text(json.dumps({token: i for i, token in enumerate(vocab)}), encoding="utf-8")
    (directory / "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n",
                                          encoding="utf-8")


def build_hf_clip(directory: Path | str, seed: int = 0) -> Path:
    """Save the tiny CLIP model and its processor into ``directory``; returns the directory."""
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    config = CLIPConfig(
        text_config={"vocab_size": 49408, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                     "num_attention_heads": 2, "max_position_embeddings": 77, "bos_token_id": 49406,
                     "eos_token_id": 49407, "pad_token_id": 49407},
        vision_config={"image_size": 32, "patch_size": 8, "hidden_size": 32, "intermediate_size": 64,
                       "num_hidden_layers": 2, "num_attention_heads": 2},
        projection_dim=16)
    CLIPModel(config).eval().save_pretrained(directory)
    write_clip_tokenizer_files(directory)
    tokenizer = CLIPTokenizer(str(directory / "vocab.json"), str(directory / "merges.txt"))
    images = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32},
                                image_mean=CLIP_MEAN, image_std=CLIP_STD)
    CLIPProcessor(image_processor=images, tokenizer=tokenizer).save_pretrained(directory)
    return directory


if __name__ == "__main__":  # python -m tests.support.tiny.hf_clip <dir>
    import sys

    print(build_hf_clip(sys.argv[1] if len(sys.argv) > 1 else "tiny-hf-clip"))
