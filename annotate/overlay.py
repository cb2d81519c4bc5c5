"""Pick the brush overlay colour that stands out against the images under review.

A fixed pink hides red objects. The project's brush colour is one per project (Label Studio's config is static),
so it is chosen once, when the project is created, from the images of the first records pushed: the palette colour
whose distance (CIE76 in Lab) to the nearest 5% of their pixels is largest.
"""
from __future__ import annotations

from typing import Iterable

import numpy as np

PALETTE = ("#ff0066", "#00e5ff", "#ffea00", "#00ff44", "#2962ff", "#ff6d00", "#d500f9")


def _lab(rgb: np.ndarray) -> np.ndarray:
    from skimage.color import rgb2lab

    return rgb2lab(rgb.reshape(-1, 1, 3).astype(np.float64) / 255.0).reshape(-1, 3)


def _hex_rgb(colour: str) -> np.ndarray:
    return np.array([int(colour[i : i + 2], 16) for i in (1, 3, 5)], dtype=np.uint8)


def contrast(colour: str, pixels: np.ndarray, quantile: float = 0.05) -> float:
    """ΔE (CIE76) between ``colour`` and the ``quantile`` closest of ``pixels`` (N x 3 uint8)."""
    distances = np.linalg.norm(_lab(pixels) - _lab(_hex_rgb(colour)[None]), axis=1)
    return float(np.quantile(distances, quantile))


def choose(images: Iterable[np.ndarray], palette: tuple[str, ...] = PALETTE, per_image: int = 4096,
           seed: int = 0) -> str:
    """The palette colour with the most contrast to a pixel sample of ``images`` (HxWx3 uint8)."""
    rng = np.random.default_rng(seed)
    samples = []
    for image in images:
        flat = np.asarray(image).reshape(-1, 3)
        samples.append(flat[rng.integers(0, len(flat), min(per_image, len(flat)))])
    if not samples:
        return palette[0]
    pixels = np.concatenate(samples)
    return max(palette, key=lambda colour: contrast(colour, pixels))
