"""The tiny Kontext builder saves a pipeline that loads and runs like the real one."""
from __future__ import annotations

import numpy as np
import torch
from PIL import Image


def test_tiny_kontext_loads_and_edits(tiny_kontext_pipe):
    pipe = tiny_kontext_pipe
    assert pipe.vae_scale_factor == 1
    assert sum(pipe.transformer.config.axes_dims_rope) == pipe.transformer.config.attention_head_dim
    image = Image.fromarray((np.random.default_rng(0).random((32, 48, 3)) * 255).astype("uint8"))
    out = pipe(image=image, prompt="make the sky red", height=32, width=48, max_area=32 * 48, _auto_resize=False,
               num_inference_steps=2, generator=torch.Generator().manual_seed(0), output_type="np").images
    assert out.shape == (1, 32, 48, 3)
    assert np.isfinite(out).all()
