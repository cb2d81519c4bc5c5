"""Real photographs and object cut-outs that installed packages ship offline (no download ever).

scikit-image bundles a handful of colour photographs (``skimage/data/*.png|jpg``; the ones that need ``pooch`` are
not used) and matplotlib bundles ``sample_data/grace_hopper.jpg`` and an RGBA gift-box icon. They are the canvases
of the built-in sample; named sub-regions of them (a cat's face, a coffee cup, ...) become objects to paste.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class Photo:
    name: str
    path: Path
    description: str  # what the photo shows, used in instructions ("a cat", "a rocket launch pad")


@dataclass(frozen=True)
class ObjectCut:
    """An object: either a region of a photo (``box`` = top, left, bottom, right; elliptical matte) or an RGBA file."""

    name: str  # the phrase used in instructions, e.g. "the coffee cup"
    path: Path
    box: tuple[int, int, int, int] | None = None


def _skimage_dir() -> Path:
    import skimage

    return Path(skimage.__file__).parent / "data"


def _matplotlib_dir() -> Path:
    import matplotlib

    return Path(matplotlib.get_data_path()) / "sample_data"


def photos() -> list[Photo]:
    """The canvases (colour photographs; grayscale ones are skipped, they make poor recolor targets)."""
    sk, mpl = _skimage_dir(), _matplotlib_dir()
    candidates = [
        Photo("astronaut", sk / "astronaut.png", "an astronaut"),
        Photo("chelsea", sk / "chelsea.png", "a cat"),
        Photo("coffee", sk / "coffee.png", "a cup of coffee"),
        Photo("rocket", sk / "rocket.jpg", "a rocket on a launch pad"),
        Photo("motorcycle", sk / "motorcycle_left.png", "a motorcycle in a garage"),
        Photo("hubble", sk / "hubble_deep_field.jpg", "a starry sky"),
        Photo("grace_hopper", mpl / "grace_hopper.jpg", "a portrait of a woman in uniform"),
    ]
    found = [p for p in candidates if p.path.exists()]
    if len(found) < 3:
        raise RuntimeError(
            f"only {len(found)} bundled photos found ({[str(p.path) for p in candidates]}); "
            "the built-in sample needs scikit-image and matplotlib installed with their data files"
        )
    return found


def objects() -> list[ObjectCut]:
    """Objects to paste: regions of the photos (boxes picked by hand) and RGBA cut-outs with a real alpha."""
    sk, mpl = _skimage_dir(), _matplotlib_dir()
    candidates = [
        ObjectCut("the cat's face", sk / "chelsea.png", (30, 120, 280, 360)),
        ObjectCut("the coffee cup", sk / "coffee.png", (25, 165, 235, 455)),
        ObjectCut("the astronaut's face", sk / "astronaut.png", (20, 150, 150, 260)),
        ObjectCut("the helmet", sk / "astronaut.png", (330, 290, 512, 490)),
        ObjectCut("the motorcycle", sk / "motorcycle_left.png", (110, 60, 480, 710)),
        ObjectCut("the woman's face", mpl / "grace_hopper.jpg", (130, 160, 360, 360)),
        ObjectCut("the gift box", mpl / "Minduka_Present_Blue_Pack.png"),
        ObjectCut("the logo", sk / "logo.png"),
    ]
    return [o for o in candidates if o.path.exists()]


def textures() -> dict[str, Path]:
    """Grayscale textures used as replacement backgrounds (tinted when used)."""
    sk = _skimage_dir()
    names = {"a brick wall": "brick.png", "grass": "grass.png", "gravel": "gravel.png", "the surface of the moon": "moon.png"}
    return {phrase: sk / file for phrase, file in names.items() if (sk / file).exists()}


@lru_cache(maxsize=32)
def load_rgba(path: Path) -> np.ndarray:
    """HxWx4 uint8 (alpha 255 where the file has none). Cached: the sample reuses a few files many times."""
    from PIL import Image

    with Image.open(path) as image:
        array = np.asarray(image.convert("RGBA"))
    array.setflags(write=False)
    return array


def object_rgba(obj: ObjectCut) -> np.ndarray:
    """The object's pixels with an alpha matte: the file's alpha, or a soft ellipse inside ``box``."""
    rgba = load_rgba(obj.path)
    if obj.box is None:
        return _crop_to_alpha(rgba)
    top, left, bottom, right = obj.box
    patch = rgba[top:bottom, left:right].copy()
    h, w = patch.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w]
    # Normalised elliptical radius; alpha fades from 1 to 0 over the outer 8% so the paste has no hard seam.
    radius = np.sqrt(((yy + 0.5 - h / 2) / (h / 2)) ** 2 + ((xx + 0.5 - w / 2) / (w / 2)) ** 2)
    alpha = np.clip((1.0 - radius) / 0.08, 0.0, 1.0)
    patch[..., 3] = np.round(alpha * 255).astype(np.uint8)
    return patch


def _crop_to_alpha(rgba: np.ndarray) -> np.ndarray:
    rows = np.flatnonzero(rgba[..., 3].any(axis=1))
    cols = np.flatnonzero(rgba[..., 3].any(axis=0))
    if rows.size == 0:
        raise ValueError("object image is fully transparent")
    return rgba[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
