"""Mask cells of the datasets, read with each dataset's own polarity into ours (True = pixels that change)."""
from __future__ import annotations

import io

import numpy as np

BINARY_SHARE = 0.98  # a mask image whose pixels are this much pure black/white is a plain binary mask
WHITE = 250  # "painted white" in a photo-like mask: every channel at least this bright


def decode(data: bytes):
    from PIL import Image

    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def white_is_edit(data: bytes) -> np.ndarray:
    """A plain mask image where white marks the edit region (UltraEdit region-based)."""
    return np.asarray(decode(data).convert("L")) > 127


def painted_mask(mask_data: bytes, source_data: bytes | None) -> np.ndarray:
    """A mask drawn in an editor over the photo (MagicBrush ``mask_img``): the edit region is where the mask image
    is transparent, or pure white, or (for a photo-like mask) pure white where the source photo is not.

    Three encodings occur in free-form editing tools, so all three are read: an alpha channel with the erased
    region transparent; a plain binary image (white = edit); the photo itself with the region painted white.
    """
    from PIL import Image

    image = decode(mask_data)
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        alpha = np.asarray(image.convert("RGBA"))[..., 3]
        if (alpha < 128).any():
            return alpha < 128
    rgb = np.asarray(image.convert("RGB")).astype(np.int16)
    gray = rgb.mean(axis=2)
    binary = ((gray <= 5) | (gray >= WHITE)).mean() >= BINARY_SHARE
    if binary or source_data is None:
        return gray > 127
    source = decode(source_data).convert("RGB")
    if source.size != image.size:
        source = source.resize(image.size, Image.Resampling.BILINEAR)
    difference = np.abs(rgb - np.asarray(source).astype(np.int16)).max(axis=2)
    return (rgb.min(axis=2) >= WHITE) & (difference > 8)
