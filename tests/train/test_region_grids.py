"""Region masks on the new models' latent/token grids (FLUX.2: 2×2-patchified channels, Qwen-Image 2.1: one token
per latent pixel), with masks that do not align to the grid: the token masks sit where the pipelines' own unpacking
puts the tokens, CoCoEdit's latent-grid weights follow FLUX.2's patchified channel order, RC-GRPO's region noise and
Edit-GRPO's per-token advantages take each model's token count, and the decoded images keep the pixel size the pixel
rewards compare."""
from __future__ import annotations

import pytest
import torch

from tests.support.tiny.flux2 import cached_tiny_flux2
from tests.support.tiny.qwen_image_21 import cached_tiny_qwen_image_21
from train.algorithms.advantages import Advantages
from train.algorithms.region_advantages import per_token_advantages, token_mask
from train.algorithms.region_noise import group_shared_noise, region_decoupled_noise
from train.algorithms.regularizer import latent_region_weights
from train.config import ModelConfig

HEIGHT, WIDTH = 64, 96


@pytest.fixture(scope="module", params=["flux2", "qwen_image_21"])
def adapter(request):
    from train.adapters import build_adapter

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices on a shared 2-core machine
    path = cached_tiny_flux2("klein") if request.param == "flux2" else cached_tiny_qwen_image_21()
    yield build_adapter(ModelConfig(adapter=request.param, path=str(path), max_sequence_length=32,
                                    true_cfg_scale=1.0), torch.device("cpu"), torch.float32)
    torch.set_num_threads(threads)


def _mask(height=HEIGHT, width=WIDTH):
    """A rectangle whose edges fall inside tokens (not on the 16-px grid)."""
    mask = torch.zeros(1, height, width, dtype=torch.bool)
    mask[:, 5:43, 7:61] = True
    return mask


def _expected_tokens(mask, rows, cols):
    """Brute force: a token is in the region when more than half of its pixel block is."""
    block_h, block_w = mask.shape[1] // rows, mask.shape[2] // cols
    blocks = mask[0].float().reshape(rows, block_h, cols, block_w).mean(dim=(1, 3))
    return (blocks > 0.5).flatten()


def _unpacked_grid(adapter, tokens, rows, cols):
    """(1, L, C) tokens -> (C, rows, cols) through the pipeline's own unpacking."""
    pipe = adapter.pipe
    if type(pipe).__name__.startswith("Flux2"):
        ids = pipe._prepare_latent_ids(torch.zeros(1, tokens.shape[2], rows, cols))
        return pipe._unpack_latents_with_ids(tokens, ids)[0]
    return pipe._unpack_latents(tokens, rows * adapter.vae_scale, cols * adapter.vae_scale, adapter.vae_scale)[0, :, 0]


def test_token_masks_sit_where_the_pipeline_unpacks_the_tokens(adapter):
    rows, cols = adapter.token_grid(HEIGHT, WIDTH)
    mask = _mask()
    tokens = token_mask(mask, rows, cols)
    assert tokens.shape == (1, rows * cols)
    assert torch.equal(tokens[0], _expected_tokens(mask, rows, cols))
    channels = adapter.transformer.config.in_channels
    grid = _unpacked_grid(adapter, tokens.float()[..., None].expand(1, rows * cols, channels).contiguous(), rows, cols)
    assert torch.equal(grid, tokens.float().view(1, rows, cols).expand(channels, rows, cols))
    # the pixel rewards compare decoded images with the source at the pixel size
    assert adapter.decode(adapter.noise(1, HEIGHT, WIDTH, torch.Generator().manual_seed(0)), HEIGHT,
                          WIDTH).shape == (1, 3, HEIGHT, WIDTH)


# FLUX.2 only: Qwen-Image 2.1 packs one token per latent pixel, so its latent grid is its token grid (tested above)
@pytest.mark.parametrize("adapter", ["flux2"], indirect=True)
def test_latent_grid_weights_follow_flux2_patchified_channels(adapter):
    """CoCoEdit's per-latent-pixel weights, packed 2×2 as (channel, dy, dx), equal the weight image patchified and
    packed by FLUX.2's own functions."""
    rows, cols = adapter.token_grid(HEIGHT, WIDTH)
    background, edit = latent_region_weights(_mask(), rows, cols, radius=1, ring_weight=0.2)
    assert background.shape == (1, rows * cols, 4)
    channels = adapter.transformer.config.in_channels // 4
    for weights in (background, edit):
        image = torch.zeros(1, 1, 2 * rows, 2 * cols)
        for k, (dy, dx) in enumerate(((0, 0), (0, 1), (1, 0), (1, 1))):
            image[0, 0, dy::2, dx::2] = weights[0, :, k].view(rows, cols)
        packed = adapter.pipe._pack_latents(adapter.pipe._patchify_latents(image.expand(1, channels, -1, -1)))
        assert torch.equal(packed, weights.repeat(1, 1, channels))


def test_region_noise_and_advantages_on_the_token_grid(adapter):
    rows, cols = adapter.token_grid(HEIGHT, WIDTH)
    masks = torch.cat([_mask(), _mask(), _mask()])
    tokens = token_mask(masks, rows, cols)
    group_ids = torch.tensor([0, 0, 0])
    own = torch.cat([adapter.noise(1, HEIGHT, WIDTH, torch.Generator().manual_seed(s)) for s in range(3)])
    shared = group_shared_noise(adapter, HEIGHT, WIDTH, group_ids, seed=0, step=1)
    noise = region_decoupled_noise(own, group_ids, tokens, shared)
    outside, inside = ~tokens[0], tokens[0]
    assert inside.any() and outside.any()
    assert torch.equal(noise[0, outside], noise[1, outside]) and torch.equal(noise[0, outside], shared[0][outside])
    assert torch.equal(noise[:, inside], own[:, inside])  # the group explores only inside the edit region
    edit = Advantages(torch.tensor([1.0, -1.0, 0.5]), torch.tensor([True] * 3), {})
    preservation = Advantages(torch.tensor([-2.0, 2.0, 0.0]), torch.tensor([True] * 3), {})
    per_token = per_token_advantages(edit, preservation, tokens, torch.tensor([True] * 3))
    assert per_token.values.shape == (3, rows * cols)
    assert torch.equal(per_token.values[:, inside], edit.values[:, None].expand(3, int(inside.sum())))
    assert torch.equal(per_token.values[:, outside], preservation.values[:, None].expand(3, int(outside.sum())))


def test_regularizer_weights_on_each_grid(adapter):
    """grid "latent" is CoCoEdit's per-latent-pixel weighting where a token packs 2x2 latent pixels (FLUX.2); on
    Qwen-Image 2.1 a token is one latent pixel, so "latent" is the token grid."""
    from train.adapters.base import region_grid_weights
    from train.algorithms.regularizer import RegularizerConfig, region_weights

    rows, cols = adapter.token_grid(HEIGHT, WIDTH)
    masks = torch.cat([_mask(), _mask()])
    latent = region_grid_weights(adapter, masks, HEIGHT, WIDTH, RegularizerConfig(grid="latent", erode_radius=1))
    token = region_grid_weights(adapter, masks, HEIGHT, WIDTH, RegularizerConfig(grid="token", erode_radius=1))
    expected_token = region_weights(token_mask(masks, rows, cols).view(2, rows, cols), 1, 0.2)
    for ours, theirs in zip(token, expected_token):
        assert torch.equal(ours, theirs)
    if adapter.latent_patch == 2:
        assert latent[0].shape == (2, rows * cols, 4)
    else:
        assert all(torch.equal(a, b) for a, b in zip(latent, token))
    with pytest.raises(ValueError, match="grid must be"):
        region_grid_weights(adapter, masks, HEIGHT, WIDTH, RegularizerConfig(grid="pixel"))
