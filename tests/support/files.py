"""Small files the curation tests write: random images and a folder of one edit pair."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image


def random_image(seed: int, fmt: str = "PNG", frames: int = 1, size: int = 8) -> bytes:
    """A ``size``² RGB image of uniform noise (an animation when ``frames`` > 1), encoded as ``fmt``."""
    rng = np.random.default_rng(seed)
    pictures = [Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)) for _ in range(frames)]
    buffer = io.BytesIO()
    if frames > 1:
        pictures[0].save(buffer, fmt, save_all=True, append_images=pictures[1:], duration=100, loop=0)
    else:
        pictures[0].save(buffer, fmt)
    return buffer.getvalue()


def pair_folder(parent: Path, *extra: str, size: int = 8) -> Path:
    """``parent/pairs`` holding ``s.png`` and ``e.png`` (seeds 0 and 1), then each name of ``extra`` (seeds 2, ...)."""
    folder = parent / "pairs"
    folder.mkdir()
    for seed, name in enumerate(("s.png", "e.png", *extra)):
        (folder / name).write_bytes(random_image(seed, size=size))
    return folder
