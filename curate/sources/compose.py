"""Pixel helpers for the procedural edits: pasting with alpha, hole filling, colour names and positions in words."""
from __future__ import annotations

import colorsys

import numpy as np

# (name, hue in [0, 1)) for recolor targets; saturated, distinct and easy to name.
HUES = {"red": 0.0, "orange": 0.08, "yellow": 0.15, "green": 0.33, "cyan": 0.5, "blue": 0.62, "purple": 0.76, "pink": 0.9}
RGB_COLOURS = {
    "red": (220, 30, 30), "green": (30, 170, 60), "blue": (30, 80, 220), "yellow": (245, 210, 20),
    "white": (250, 250, 250), "black": (15, 15, 15), "orange": (245, 130, 20), "purple": (140, 50, 190),
}


def resize_rgba(rgba: np.ndarray, height: int, width: int) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.fromarray(rgba, "RGBA").resize((max(1, width), max(1, height)), Image.Resampling.LANCZOS))


def paste(canvas: np.ndarray, rgba: np.ndarray, top: int, left: int) -> tuple[np.ndarray, np.ndarray]:
    """Alpha-composite ``rgba`` onto ``canvas`` at (top, left); return the new image and the full-size alpha (0..1)."""
    h, w = rgba.shape[:2]
    alpha = np.zeros(canvas.shape[:2], np.float32)
    alpha[top : top + h, left : left + w] = rgba[..., 3].astype(np.float32) / 255.0
    layer = np.zeros_like(canvas, dtype=np.float32)
    layer[top : top + h, left : left + w] = rgba[..., :3]
    out = canvas.astype(np.float32) * (1 - alpha[..., None]) + layer * alpha[..., None]
    return np.clip(np.round(out), 0, 255).astype(np.uint8), alpha


def place(rng: np.random.Generator, canvas_size: int, rgba: np.ndarray, lo: float, hi: float) -> tuple[np.ndarray, int, int]:
    """Scale the object so its longer side is ``lo..hi`` of the canvas and pick a position fully inside it."""
    h, w = rgba.shape[:2]
    scale = rng.uniform(lo, hi) * canvas_size / max(h, w)
    new_h, new_w = max(2, int(round(h * scale))), max(2, int(round(w * scale)))
    resized = resize_rgba(rgba, new_h, new_w)
    top = int(rng.integers(0, canvas_size - new_h + 1))
    left = int(rng.integers(0, canvas_size - new_w + 1))
    return resized, top, left


def fill_hole(image: np.ndarray, hole: np.ndarray, iterations: int = 30, sigma: float = 3.0) -> np.ndarray:
    """Inpaint ``hole`` from its surroundings: nearest-pixel fill, then repeated blurring with the outside held fixed
    (a cheap diffusion / harmonic fill; enough to make an object disappear into its background)."""
    from scipy import ndimage

    if not hole.any():
        return image.copy()
    rows, cols = np.flatnonzero(hole.any(1)), np.flatnonzero(hole.any(0))
    margin = int(4 * sigma) + 2  # work on the hole's bounding box plus the blur's reach
    t, b = max(0, rows[0] - margin), min(hole.shape[0], rows[-1] + margin + 1)
    l, r = max(0, cols[0] - margin), min(hole.shape[1], cols[-1] + margin + 1)
    sub = image[t:b, l:r].astype(np.float32)
    sub_hole = hole[t:b, l:r]
    if sub_hole.all():  # nothing to diffuse from: fall back to the image mean
        filled = np.broadcast_to(image.reshape(-1, 3).mean(0), sub.shape).copy()
    else:
        _, (iy, ix) = ndimage.distance_transform_edt(sub_hole, return_indices=True)
        filled = sub[iy, ix]
        for _ in range(iterations):
            blurred = ndimage.gaussian_filter(filled, sigma=(sigma, sigma, 0))
            filled[sub_hole] = blurred[sub_hole]
    out = image.copy()
    out[t:b, l:r][sub_hole] = np.clip(np.round(filled[sub_hole]), 0, 255).astype(np.uint8)
    return out


def colour_name(pixels: np.ndarray) -> str:
    """A basic colour word for the mean of ``pixels`` (Nx3 uint8)."""
    r, g, b = (pixels.reshape(-1, 3).mean(0) / 255.0).tolist()
    h, s, v = colorsys.rgb_to_hsv(r, g, b)
    if v < 0.2:
        return "black"
    if s < 0.18:
        return "white" if v > 0.8 else "gray"
    if 0.04 < h < 0.12 and v < 0.6:
        return "brown"
    return min(HUES, key=lambda name: min(abs(h - HUES[name]), 1 - abs(h - HUES[name])))


def position_words(mask: np.ndarray) -> str:
    """Where a region lies, in words ("in the top left", "in the center") from its centroid on a 3x3 grid."""
    ys, xs = np.nonzero(mask)
    if ys.size == 0:
        return "in the image"
    h, w = mask.shape
    row = ("top", "middle", "bottom")[min(2, int(3 * ys.mean() / h))]
    col = ("left", "center", "right")[min(2, int(3 * xs.mean() / w))]
    if row == "middle" and col == "center":
        return "in the center"
    if row == "middle":
        return f"on the {col}"
    return f"in the {row} {col}" if col != "center" else f"at the {row}"


def recolour(image: np.ndarray, hue: float) -> np.ndarray:
    """Set every pixel's hue to ``hue`` (keeping its brightness, raising low saturation) - a visible recolor."""
    from skimage.color import hsv2rgb, rgb2hsv

    hsv = rgb2hsv(image)
    hsv[..., 0] = hue
    hsv[..., 1] = np.maximum(hsv[..., 1], 0.6)
    hsv[..., 2] = 0.25 + 0.75 * hsv[..., 2]  # lift near-black pixels so the new colour shows
    return np.clip(np.round(hsv2rgb(hsv) * 255), 0, 255).astype(np.uint8)
