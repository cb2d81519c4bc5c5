"""64-bit perceptual hashes (DCT pHash) and Hamming distances, vectorised over numpy arrays.

pHash: luminance, area-downscaled to 32x32, 2-D DCT-II, the 8x8 lowest frequencies, one bit per coefficient:
above their median. Robust to re-encoding, resizing and small photometric changes; a Hamming distance of a few bits
(out of 64) means "the same picture". A pair of images gets three hashes: the source, the edited image and the
*change* (the per-pixel colour distance |edited - source|), because two different small edits of one photo have
near-identical source and edited hashes but a different change hash.
"""
from __future__ import annotations

import numpy as np

HASH_SIZE = 8  # 8x8 = 64 bits
_DOWNSCALE = 32
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def phash(image: np.ndarray) -> int:
    """pHash of an HxW (float or uint8) or HxWx3 image, as an unsigned 64-bit int."""
    from PIL import Image
    from scipy.fft import dctn

    pixels = np.asarray(image, dtype=np.float32)
    if pixels.ndim == 3:
        pixels = pixels[..., :3] @ _LUMA
    if pixels.ndim != 2 or min(pixels.shape) < 1:
        raise ValueError(f"phash needs an HxW or HxWx3 image, got shape {np.shape(image)}")
    small = np.asarray(Image.fromarray(pixels, mode="F").resize((_DOWNSCALE, _DOWNSCALE), Image.Resampling.BOX))
    low = dctn(small.astype(np.float64), type=2, norm="ortho")[:HASH_SIZE, :HASH_SIZE].ravel()
    return bits_to_int(low > np.median(low))


def change_image(source: np.ndarray, edited: np.ndarray) -> np.ndarray:
    """Per-pixel RGB distance between two HxWx3 uint8 images (float32; cast first: uint8 differences wrap)."""
    diff = np.asarray(edited, dtype=np.float32) - np.asarray(source, dtype=np.float32)
    from editkit.metrics import sum_channels

    return np.sqrt(sum_channels(diff * diff))


def pair_hashes(source: np.ndarray, edited: np.ndarray) -> dict[str, int]:
    """The three hashes stored in ``record["phash"]``."""
    return {"source": phash(source), "edited": phash(edited), "change": phash(change_image(source, edited))}


def bits_to_int(bits: np.ndarray) -> int:
    """64 booleans (most significant first) -> int."""
    bits = np.asarray(bits, dtype=bool).ravel()
    if bits.size != 64:
        raise ValueError(f"need 64 bits, got {bits.size}")
    return int(np.packbits(bits).view(">u8")[0])


def hamming(a: np.ndarray | int, b: np.ndarray | int) -> np.ndarray:
    """Element-wise Hamming distance between uint64 hashes."""
    return np.bitwise_count(np.bitwise_xor(np.asarray(a, dtype=np.uint64), np.asarray(b, dtype=np.uint64)))
