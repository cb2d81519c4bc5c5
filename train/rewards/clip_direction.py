"""CLIP-direction reward: did the image move toward what the instruction says?

``cos(E(edited) − E(source), T(instruction))`` with the open-clip scorer of the selection stage
(:class:`editkit.clip.ClipScorer`; same model naming, e.g. ``local-dir:<folder>``). An edit that did not move
the embedding at all has no direction: NaN (masked out and counted).
"""
from __future__ import annotations

import torch

from editkit.needs import declare_needs
from train.rewards import RewardInputs, register_reward


def _png_bytes(images: torch.Tensor) -> list[bytes]:
    from editkit.store import encode_png

    arrays = (images.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    return [encode_png(array) for array in arrays]


@register_reward("clip_direction")
@declare_needs("source_image", "instruction")
def clip_direction(model: str = "ViT-B-32", pretrained: str | None = None, device: str = "auto",
                   batch_size: int = 32):
    from editkit.clip import ClipScorer, clip_scores
    from editkit.scores import CLIP_DIRECTION

    scorer = ClipScorer(model, pretrained=pretrained, device=device, batch_size=batch_size, cache_dir=None)

    def reward(inputs: RewardInputs) -> torch.Tensor:
        sources = scorer.embed_images(_png_bytes(inputs.sources))
        edits = scorer.embed_images(_png_bytes(inputs.images))
        texts = scorer.embed_texts(inputs.prompts)
        scores = clip_scores(sources, edits, texts)
        return torch.tensor([s.get(CLIP_DIRECTION, float("nan")) for s in scores], dtype=torch.float64)

    return reward
