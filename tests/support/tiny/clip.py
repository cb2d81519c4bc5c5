"""A tiny randomly initialised open-clip model, saved the way real open-clip checkpoints are published.

``build_clip(directory)`` writes ``open_clip_config.json`` (``model_cfg`` + ``preprocess_cfg``) and
``open_clip_model.safetensors``: the layout of the ``hf-hub:`` repositories, so ``model: local-dir:<directory>`` in
``params.yaml`` loads it through exactly the code path a real checkpoint uses (:mod:`editkit.clip`). It uses
open-clip's bundled BPE tokenizer (shipped in the package, no download).
"""
from __future__ import annotations

import json
from pathlib import Path

# Small enough to build and run in well under a second on CPU; big enough to be a real ViT + text transformer.
TINY_CLIP_CONFIG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "head_width": 32, "patch_size": 8},
    "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}
TINY_PREPROCESS = {
    "mean": [0.48145466, 0.4578275, 0.40821073],
    "std": [0.26862954, 0.26130258, 0.27577711],
    "interpolation": "bicubic",
    "resize_mode": "shortest",
}


def build_clip(directory: Path | str, seed: int = 0) -> Path:
    """Save a tiny open-clip model into ``directory``; returns the directory (use it as ``local-dir:<dir>``)."""
    import open_clip
    import torch
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    model = open_clip.CLIP(**TINY_CLIP_CONFIG)
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(directory / "open_clip_model.safetensors"))
    config = {"model_cfg": TINY_CLIP_CONFIG, "preprocess_cfg": TINY_PREPROCESS}
    (directory / "open_clip_config.json").write_text(json.dumps(config, indent=2))
    return directory


if __name__ == "__main__":  # python -m tests.support.tiny.clip <dir>
    import sys

    print(build_clip(sys.argv[1] if len(sys.argv) > 1 else "tiny-clip"))
