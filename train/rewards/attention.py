"""RC-GRPO's attention-concentration reward: how much of the target phrase's attention falls inside the edit mask.

The rollout records, with :class:`train.rollout.attention.AttentionRecorder`, the text→image attention of the edit
target phrase's tokens (averaged over heads, layers and denoising steps) and hands it over as ``extras["attention"]``
(B, L) together with the token grid ``extras["attention_grid"]`` (rows, cols). The pixel edit mask is pooled to that
grid (:func:`train.algorithms.region_advantages.token_mask`) and the reward is the map's mass inside it, in [0, 1].
A sample whose mask covers no token, or whose map is NaN (nothing recorded), gets NaN: masked out and counted.
"""
from __future__ import annotations

import torch

from editkit.needs import declare_needs
from train.rewards import RewardInputs, register_reward


@register_reward("attention_concentration")
@declare_needs("mask", capabilities=("attention_maps",))
def attention_concentration():
    def reward(inputs: RewardInputs) -> torch.Tensor:
        from train.algorithms.region_advantages import token_mask

        missing = [key for key in ("attention", "attention_grid") if key not in inputs.extras]
        if missing:
            raise KeyError(f"the trainer did not record attention: RewardInputs.extras lacks {missing}. The "
                           "'attention_concentration' reward needs the rollout to record the target phrase's "
                           "attention with train.rollout.attention.AttentionRecorder")
        maps = torch.as_tensor(inputs.extras["attention"]).detach().cpu()
        rows, cols = (int(n) for n in inputs.extras["attention_grid"])
        batch = inputs.edit_masks.shape[0]
        if maps.shape != (batch, rows * cols):
            raise ValueError(f"attention maps have shape {tuple(maps.shape)}, expected ({batch}, {rows * cols}) "
                             f"for {batch} images on a {rows}x{cols} token grid")
        tokens = token_mask(inputs.edit_masks.cpu(), rows, cols)
        fraction = attention_fraction_inside(maps, tokens)
        return torch.where(tokens.any(dim=1), fraction, torch.full_like(fraction, float("nan")))

    return reward


def attention_fraction_inside(maps: torch.Tensor, token_masks: torch.Tensor) -> torch.Tensor:
    """The fraction of each (B, L) attention map's mass on the True tokens of ``token_masks`` (B, L) -> (B,).

    Maps need not be normalised; a NaN row (nothing recorded) stays NaN."""
    if maps.shape != token_masks.shape:
        raise ValueError(f"attention maps {tuple(maps.shape)} and token masks {tuple(token_masks.shape)} differ")
    maps = maps.double()
    inside = torch.where(token_masks.bool().to(maps.device), maps, torch.zeros_like(maps)).sum(dim=1)
    return inside / maps.sum(dim=1)
