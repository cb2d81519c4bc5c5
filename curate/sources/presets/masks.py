"""Mask cells of the datasets, read with each dataset's own encoding into ours (True = pixels that change).

Every shipped mask is read at the **record's resolution**, the size of the source image it belongs to:

* a mask of another size but the same aspect (within 1%) is resized to the source (nearest neighbour) and the record
  flagged :data:`RESIZED_FLAG`; a mask whose aspect differs is a :class:`MaskProblem` (the record is rejected with
  ``mask size mismatch: ...``), never stretched silently.
* painted masks are read by where the paint is (:func:`read_mask`): the alpha channel when the mask has transparent
  pixels (MagicBrush's RGBA masks: the erased region is transparent), a plain black/white image as white = edit, else
  the photo with the region painted opaque white, read as the pixels that are white in the mask **and differ from the
  source**. Where the paint cannot be told from the photo (white paint over pixels that are white in the photo too)
  those pixels are kept when they touch the certain paint inside its bounding box, and the record is flagged
  :data:`AMBIGUOUS_FLAG` with the count in ``meta["mask_ambiguous_pixels"]``: the mask is never silently shrunk.
"""
from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import Any, Literal, Optional

import numpy as np

BINARY_SHARE = 0.98  # a mask image whose pixels are this much pure black/white is a plain binary mask
WHITE = 250  # "painted white" in a photo-like mask: every channel at least this bright
SAME = 8  # a mask pixel within this of the source (max over channels) is the photo showing through
ASPECT_TOLERANCE = 0.01
RESIZED_FLAG = "mask_resized"
AMBIGUOUS_FLAG = "mask_ambiguous"

Encoding = Literal["auto", "white", "black", "alpha", "painted"]


class MaskProblem(ValueError):
    """A shipped mask that cannot be used for its pair; ``str()`` is the record's reject reason."""


class SourceUnreadable(ValueError):
    """The source image itself cannot be decoded: ingest rejects the pair for that, the mask is not read."""


@dataclass
class MaskReading:
    mask: np.ndarray  # bool HxW at the source image's size, True = should change
    how: str  # "alpha", "binary", "painted" (which reading was used)
    flags: list[str] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)

    def apply(self, pair) -> None:
        """Put the reading on a :class:`curate.sources.RawPair` (``gt_mask``, flags, meta)."""
        pair.gt_mask = self.mask
        for flag in self.flags:
            if flag not in pair.flags:
                pair.flags.append(flag)
        pair.meta.update(self.meta)


def decode(data: bytes):
    from PIL import Image

    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def _source_rgb(source_data: bytes) -> np.ndarray:
    """The source image as ingest sees it (upright, alpha composited on white), HxWx3 uint8."""
    from PIL import ImageOps

    from curate.images import to_rgb

    image = decode(source_data)
    orientation = image.getexif().get(0x0112, 1)
    upright = ImageOps.exif_transpose(image) if orientation not in (None, 1) else image
    return np.asarray(to_rgb(upright, "source"))


def _fit(image, size: tuple[int, int], flags: list[str]):
    """``image`` at ``size`` (w, h): resized with a flag when only the scale differs, else a :class:`MaskProblem`."""
    from PIL import Image

    if image.size == size:
        return image
    (mw, mh), (w, h) = image.size, size
    gap = abs((mw / mh) / (w / h) - 1)
    if gap > ASPECT_TOLERANCE:
        raise MaskProblem(f"mask size mismatch: mask {mw}x{mh}, image {w}x{h} (aspect differs by {gap:.1%})")
    flags.append(RESIZED_FLAG)
    return image.resize(size, Image.Resampling.NEAREST)


def fit_mask(mask: np.ndarray, source_data: Optional[bytes]) -> MaskReading:
    """A boolean mask already in our polarity, brought to the source's size (flag or :class:`MaskProblem`)."""
    from PIL import Image

    mask = np.asarray(mask, dtype=bool)
    flags: list[str] = []
    if source_data is not None:
        try:
            height, width = _source_rgb(source_data).shape[:2]
        except Exception as error:
            raise SourceUnreadable(f"{type(error).__name__}: {error}") from None
        image = _fit(Image.fromarray(mask.astype(np.uint8) * 255), (width, height), flags)
        mask = np.asarray(image) > 127
    return MaskReading(mask, "binary", flags)


def read_mask(mask_data: bytes, source_data: Optional[bytes], encoding: Encoding = "auto") -> MaskReading:
    """A mask image cell -> :class:`MaskReading` at the source's resolution (see the module docstring).

    ``encoding``: ``auto`` (alpha if any pixel is transparent, else a plain black/white mask as white = edit, else
    paint over the photo), ``white`` / ``black`` (grey level above / below 128 = edit), ``alpha`` (transparent = edit),
    ``painted`` (opaque white paint over the photo).
    """
    try:
        image = decode(mask_data)
    except Exception as error:  # not an image, truncated: the pair's problem
        raise MaskProblem(f"corrupt mask: {type(error).__name__}: {error}") from None
    flags: list[str] = []
    try:
        source = _source_rgb(source_data) if source_data is not None else None
    except Exception as error:
        raise SourceUnreadable(f"{type(error).__name__}: {error}") from None
    if source is not None:
        image = _fit(image, (source.shape[1], source.shape[0]), flags)
    has_alpha = image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info
    if encoding in ("auto", "alpha") and has_alpha:
        alpha = np.asarray(image.convert("RGBA"))[..., 3]
        if encoding == "alpha" or (alpha < 128).any():
            return MaskReading(alpha < 128, "alpha", flags)
    if encoding == "alpha":  # asked for alpha but the mask has none: nothing is marked transparent
        raise MaskProblem("mask has no alpha channel (ingest encoding alpha)")
    rgb = np.asarray(image.convert("RGB")).astype(np.int16)
    gray = rgb.mean(axis=2)
    if encoding == "white":
        return MaskReading(gray > 127, "binary", flags)
    if encoding == "black":
        return MaskReading(gray <= 127, "binary", flags)
    binary = ((gray <= 5) | (gray >= WHITE)).mean() >= BINARY_SHARE
    if encoding == "auto" and (binary or source is None):
        return MaskReading(gray > 127, "binary", flags)
    if source is None:
        raise MaskProblem("painted mask without a source image to compare with")
    return _painted(rgb, source.astype(np.int16), flags)


def _painted(rgb: np.ndarray, source: np.ndarray, flags: list[str]) -> MaskReading:
    white = rgb.min(axis=2) >= WHITE
    same = np.abs(rgb - source).max(axis=2) <= SAME
    paint = white & ~same  # certainly paint: white where the photo is not
    ambiguous = white & same  # white in both: paint or photo, the pixels cannot tell
    meta: dict[str, Any] = {}
    if ambiguous.any():
        flags.append(AMBIGUOUS_FLAG)
        meta["mask_ambiguous_pixels"] = int(ambiguous.sum())
        paint = paint | _touching(ambiguous, paint)
    return MaskReading(paint, "painted", flags, meta)


def _touching(candidates: np.ndarray, seed: np.ndarray) -> np.ndarray:
    """The ``candidates`` pixels connected (8-neighbourhood) to ``seed`` inside the seed's bounding box."""
    if not seed.any():
        return np.zeros_like(seed)
    from scipy import ndimage

    rows, cols = np.nonzero(seed)
    box = (slice(rows.min(), rows.max() + 1), slice(cols.min(), cols.max() + 1))
    labels, _ = ndimage.label((candidates | seed)[box], structure=np.ones((3, 3), bool))
    keep = np.unique(labels[seed[box]])
    out = np.zeros_like(seed)
    out[box] = np.isin(labels, keep[keep > 0]) & candidates[box]
    return out


def white_is_edit(data: bytes) -> np.ndarray:
    """A plain mask image where white marks the edit region, at its own size (see :func:`read_mask` for sizing)."""
    return np.asarray(decode(data).convert("L")) > 127


def painted_mask(mask_data: bytes, source_data: bytes | None) -> np.ndarray:
    """The mask of :func:`read_mask` (``auto``) without its flags."""
    return read_mask(mask_data, source_data).mask
