"""Thumbnails for the static HTML pages (the `editkit view` gallery, the benchmark and training reports).

A thumbnail is a small JPEG named by a hash of what it shows (:func:`digest` of its inputs), stored under
``thumbs/<first two hex digits>/<hash>.jpg`` of the page's folder: a rebuild draws only what changed, and a page's
folder can be copied anywhere with its images. Mask overlays and difference heat maps are drawn with numpy and Pillow
only (no colormap library).
"""
from __future__ import annotations

import hashlib
import io
from pathlib import Path
from typing import Any

import numpy as np

SIZE = 160  # longest side, pixels
VERSION = "1"  # part of every thumbnail's hash: bump when the drawing changes
MASK_COLOUR = (255, 40, 200)
SECOND_MASK_COLOUR = (40, 200, 255)


def digest(*parts: bytes | str) -> str:
    """A short hash of ``parts`` (and :data:`VERSION`): the name of the thumbnail drawn from them."""
    h = hashlib.sha1(VERSION.encode())
    for part in parts:
        data = part.encode() if isinstance(part, str) else part
        h.update(len(data).to_bytes(8, "little"))
        h.update(data)
    return h.hexdigest()[:24]


def rel_path(key: str) -> str:
    """Where the thumbnail ``key`` lives, relative to the page's folder."""
    return f"thumbs/{key[:2]}/{key}.jpg"


def shrink(image: bytes | np.ndarray, size: int = SIZE):
    """An RGB PIL image of at most ``size`` pixels a side, from encoded bytes (JPEGs decode at a reduced scale) or
    an (H, W, 3) uint8 array."""
    from PIL import Image

    if isinstance(image, np.ndarray):
        out = Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8)).convert("RGB")
    else:
        with Image.open(io.BytesIO(image)) as opened:
            opened.draft("RGB", (size, size))
            out = opened.convert("RGB")
    out.thumbnail((size, size), Image.BILINEAR)
    return out


def heat(x: np.ndarray) -> np.ndarray:
    """0..1 -> black, red, yellow, white (a heat map that needs no colormap library)."""
    x = np.clip(x * 2.0, 0, 1)  # small differences stay visible
    r = np.clip(x * 3, 0, 1)
    g = np.clip(x * 3 - 1, 0, 1)
    b = np.clip(x * 3 - 2, 0, 1)
    return (np.stack([r, g, b], axis=2) * 255).astype(np.uint8)


def overlay(rgb: np.ndarray, mask: np.ndarray, colour: tuple[int, int, int] = MASK_COLOUR) -> np.ndarray:
    """``rgb`` dimmed outside ``mask`` and tinted with ``colour`` inside it (same height and width)."""
    out = rgb.astype(np.float32) * np.where(mask, 1.0, 0.45)[..., None]
    out[mask] = out[mask] * 0.45 + np.asarray(colour, np.float32) * 0.55
    return out.astype(np.uint8)


def mask_over(image, mask: np.ndarray, colour: tuple[int, int, int] = MASK_COLOUR):
    """A PIL image: ``mask`` (bool, any size: resized nearest) drawn over the PIL image ``image``."""
    from PIL import Image

    small = np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).resize(image.size, Image.NEAREST)) > 127
    return Image.fromarray(overlay(np.asarray(image), small, colour))


def difference(a, b):
    """A PIL heat map of the per-pixel largest channel difference of two PIL images (``b`` resized to ``a``)."""
    from PIL import Image

    if b.size != a.size:
        b = b.resize(a.size, Image.BILINEAR)
    diff = np.abs(np.asarray(a, np.int16) - np.asarray(b, np.int16)).max(axis=2).astype(np.float32) / 255
    return Image.fromarray(heat(diff))


class ThumbDir:
    """The thumbnails of one page's folder: :meth:`put` writes one unless its file exists already."""

    def __init__(self, out: Path | str) -> None:
        self.out, self.written, self.reused = Path(out), 0, 0

    def has(self, key: str) -> bool:
        return (self.out / rel_path(key)).exists()

    def put(self, key: str, image: Any) -> str:
        """Write the PIL ``image`` as the thumbnail ``key`` (atomically) if missing; returns its relative path."""
        rel = rel_path(key)
        path = self.out / rel
        if path.exists():
            self.reused += 1
            return rel
        path.parent.mkdir(parents=True, exist_ok=True)
        buffer = io.BytesIO()
        image.convert("RGB").save(buffer, format="JPEG", quality=82)
        tmp = path.with_suffix(".jpg.tmp")
        tmp.write_bytes(buffer.getvalue())
        tmp.replace(path)
        self.written += 1
        return rel
