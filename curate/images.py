"""Validate and normalise image bytes at ingest: every later stage may assume 8-bit RGB images of equal size.

Policies (each problem becomes an :class:`ImageProblem` whose ``reason`` is recorded on the rejected record):

* missing / empty bytes -> ``missing <role> image``; unreadable -> ``corrupt <role> image``; cut-off files ->
  ``truncated <role> image`` (truncated files are never silently padded).
* more than ``max_pixels`` pixels (PIL's decompression-bomb limit by default) -> ``image too large``, checked from the
  header before any pixel is decoded.
* modes: RGB kept; L/1 (grayscale) replicated to RGB; P (palette) expanded; RGBA/LA/PA and palette transparency are
  composited on WHITE (editors' outputs with alpha are mostly cut-outs on transparent canvases); CMYK converted with
  its embedded ICC profile when there is one, else PIL's formula; 16-bit (I;16*, I) scaled to 8-bit (÷257); float and
  other modes -> ``unsupported image mode``.
* EXIF orientation is applied (the pixels are rotated, the tag dropped).
* the edited image must have the source's size; if only the scale differs (aspect within ``aspect_tolerance``) it is
  resized to the source size (flag ``edited_resized``), otherwise ``size mismatch``.
* ``max_side``: larger pairs are downscaled (both images, same factor; flag ``downscaled``).

Bytes are kept as they came when nothing had to change (8-bit RGB JPEG/PNG/WebP, upright, right size), otherwise
re-encoded as PNG (lossless, so normalisation never adds artefacts).
"""
from __future__ import annotations

import io
import warnings
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np

KEEP_FORMATS = {"JPEG", "PNG", "WEBP"}
PIL_DEFAULT_MAX_PIXELS = 89_478_485  # PIL.Image.MAX_IMAGE_PIXELS; its bomb check triggers above this


class ImageProblem(ValueError):
    """A pair that cannot be ingested; ``category`` is what metrics count, ``reason`` what the record says."""

    def __init__(self, category: str, detail: str = ""):
        self.category = category
        self.reason = f"{category}: {detail}" if detail else category
        super().__init__(self.reason)


@dataclass
class ImagePolicy:
    max_pixels: int = PIL_DEFAULT_MAX_PIXELS
    max_side: int | None = None
    aspect_tolerance: float = 0.01

    def __post_init__(self) -> None:
        if not 0 < self.max_pixels <= PIL_DEFAULT_MAX_PIXELS:
            raise ValueError(f"max_pixels must be in 1..{PIL_DEFAULT_MAX_PIXELS} (PIL's own bomb limit), got {self.max_pixels}")
        if self.max_side is not None and self.max_side < 1:
            raise ValueError(f"max_side must be a positive number of pixels or null, got {self.max_side}")


@dataclass
class NormalizedPair:
    source: bytes
    edited: bytes | None
    width: int
    height: int
    flags: list[str] = field(default_factory=list)


@dataclass
class _Decoded:
    image: object  # PIL.Image.Image, RGB
    kept_as_is: bool  # True: the original bytes already are a valid normalised encoding
    upright: object = None  # the upright image in its original mode (masks read it without compositing)


def decode(data: bytes | None, role: str, policy: ImagePolicy) -> _Decoded:
    """Bytes -> upright 8-bit RGB PIL image, or :class:`ImageProblem`."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    if not data:
        raise ImageProblem(f"missing {role} image", "no bytes")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise ImageProblem("image too large", f"{role}: {error}") from None
    except UnidentifiedImageError:
        raise ImageProblem(f"corrupt {role} image", "not a recognised image format") from None
    except Exception as error:  # PIL raises many types for malformed headers
        raise ImageProblem(f"corrupt {role} image", f"{type(error).__name__}: {error}") from None
    width, height = image.size
    if width * height > policy.max_pixels:
        raise ImageProblem("image too large", f"{role} is {width}x{height} = {width * height} pixels > {policy.max_pixels}")
    if width < 1 or height < 1:
        raise ImageProblem(f"corrupt {role} image", f"size {width}x{height}")
    try:
        image.load()
    except OSError as error:
        category = "truncated" if "truncated" in str(error).lower() else "corrupt"
        raise ImageProblem(f"{category} {role} image", str(error)) from None
    except Exception as error:
        raise ImageProblem(f"corrupt {role} image", f"{type(error).__name__}: {error}") from None
    try:
        orientation = image.getexif().get(0x0112, 1)
        upright = ImageOps.exif_transpose(image) if orientation not in (None, 1) else image
        rgb = to_rgb(upright, role)
    except ImageProblem:
        raise
    except Exception as error:  # malformed EXIF or a mode PIL cannot convert
        raise ImageProblem(f"corrupt {role} image", f"{type(error).__name__}: {error}") from None
    kept = image.format in KEEP_FORMATS and image.mode == "RGB" and orientation in (None, 1) and not _is_16bit_png(data)
    return _Decoded(rgb, kept, upright)


def _is_16bit_png(data: bytes) -> bool:
    """PIL opens 48-bit RGB PNGs as 8-bit "RGB"; the stored bytes must then be re-encoded (IHDR bit depth, byte 24)."""
    return data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 24 and data[24] != 8


def to_rgb(image, role: str = "image"):
    """Any PIL mode -> 8-bit RGB under the policy in the module docstring."""
    from PIL import Image

    mode = image.mode
    if mode == "RGB":
        return image
    if mode in ("1", "L"):
        return image.convert("RGB")
    if mode == "P":
        has_alpha = "transparency" in image.info
        image = image.convert("RGBA" if has_alpha else "RGB")
        return _on_white(image) if has_alpha else image
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        return _on_white(image.convert("RGBA"))
    if mode == "CMYK":
        return _cmyk_to_rgb(image)
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        values = np.asarray(image, dtype=np.float64)
        if mode == "I" and values.max(initial=0) <= 255:  # 8-bit data stored in a 32-bit container
            scaled = values
        else:
            scaled = np.clip(values, 0, 65535) / 257.0
        return Image.fromarray(np.round(scaled).astype(np.uint8), "L").convert("RGB")
    if mode == "YCbCr":
        return image.convert("RGB")
    raise ImageProblem("unsupported image mode", f"{role} has mode {mode}")


def _on_white(rgba):
    from PIL import Image

    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(white, rgba).convert("RGB")


def _cmyk_to_rgb(image):
    from PIL import ImageCms

    profile = image.info.get("icc_profile")
    if profile:
        try:
            source = ImageCms.ImageCmsProfile(io.BytesIO(profile))
            return ImageCms.profileToProfile(image, source, ImageCms.createProfile("sRGB"), outputMode="RGB")
        except Exception:  # a broken embedded profile: fall back to the plain formula
            pass
    return image.convert("RGB")


def normalize_pair(source: bytes | None, edited: bytes | None, policy: ImagePolicy, has_edited: bool = True) -> NormalizedPair:
    """Validate both images, apply the size policy and return the bytes to store."""
    from PIL import Image

    src = decode(source, "source", policy)
    flags: list[str] = []
    ed = decode(edited, "edited", policy) if has_edited else None
    width, height = src.image.size
    if ed is not None and ed.image.size != (width, height):
        ew, eh = ed.image.size
        aspect_gap = abs((ew / eh) / (width / height) - 1)
        if aspect_gap > policy.aspect_tolerance:
            raise ImageProblem("size mismatch", f"source {width}x{height}, edited {ew}x{eh} (aspect differs by {aspect_gap:.1%})")
        ed = _Decoded(ed.image.resize((width, height), Image.Resampling.LANCZOS), False)
        flags.append("edited_resized")
    if policy.max_side and max(width, height) > policy.max_side:
        scale = policy.max_side / max(width, height)
        width, height = max(1, round(width * scale)), max(1, round(height * scale))
        src = _Decoded(src.image.resize((width, height), Image.Resampling.LANCZOS), False)
        if ed is not None:
            ed = _Decoded(ed.image.resize((width, height), Image.Resampling.LANCZOS), False)
        flags.append("downscaled")
    return NormalizedPair(
        source=source if src.kept_as_is else png_bytes(src.image),
        edited=None if ed is None else (edited if ed.kept_as_is else png_bytes(ed.image)),
        width=width,
        height=height,
        flags=flags,
    )


def load_mask(data: bytes | None, width: int, height: int, policy: ImagePolicy) -> np.ndarray:
    """A user mask image (white = change) -> bool HxW at the normalised size; same aspect rule as edited images."""
    from PIL import Image

    decoded = decode(data, "mask", policy)
    # Alpha is ignored for masks (compositing a transparent background on white would mark it "change").
    upright = decoded.upright
    gray = upright.convert("L") if upright.mode in ("1", "L", "P", "RGB", "RGBA", "LA", "CMYK") else decoded.image.convert("L")
    if gray.size != (width, height):
        mw, mh = gray.size
        if abs((mw / mh) / (width / height) - 1) > policy.aspect_tolerance:
            raise ImageProblem("mask size mismatch", f"mask {mw}x{mh}, image {width}x{height}")
        gray = gray.resize((width, height), Image.Resampling.NEAREST)
    return np.asarray(gray) > 127


def png_bytes(image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_JPEG_SIGNATURE = b"\xff\xd8\xff"
_PNG_END = b"IEND\xaeB`\x82"  # the IEND chunk: its type and CRC


def decode_pixels(data: bytes) -> np.ndarray:
    """Stored (ingest-normalised) image bytes -> HxWx3 uint8 RGB, the pixels :func:`editkit.store.decode_rgb` gives.

    8-bit RGB PNGs (what ingest writes) are decoded by libspng (``pyspng``, ~1.5x faster than libpng here), other
    PNGs and JPEGs by OpenCV: PNG is lossless and JPEG's default decoder settings are the same in OpenCV and PIL
    (libjpeg-turbo, ISLOW DCT, fancy upsampling), so the pixels are identical (tested), at ~1.5x (PNG, OpenCV) to
    ~4x (JPEG) less time than PIL. Stored bytes are upright (ingest re-encodes rotated images), so the EXIF
    orientation is ignored as PIL ignores it. Anything else (other formats, files that do not end as they should,
    images a fast decoder does not return as 8-bit 3-channel) goes through PIL, which raises on damaged bytes."""
    import cv2

    from editkit import store

    # complete files only (their end marker last): OpenCV fills a cut-off file in where PIL raises
    # 8-bit PNGs only: OpenCV scales 16-bit samples to 8 bits where PIL's conversion clips them
    png8 = data[:8] == _PNG_SIGNATURE and data[-8:] == _PNG_END and len(data) > 26 and data[24] == 8
    if png8 and data[12:16] == b"IHDR" and data[25] == 2:  # colour type 2: RGB, no alpha, no palette
        pixels = _spng_rgb(data)
        if pixels is not None:
            return pixels
    if png8 or (data[:3] == _JPEG_SIGNATURE and data[-2:] == b"\xff\xd9"):
        pixels = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR_RGB | cv2.IMREAD_IGNORE_ORIENTATION)
        if pixels is not None and pixels.dtype == np.uint8 and pixels.ndim == 3 and pixels.shape[2] == 3:
            return pixels
    return store.decode_rgb(data)


def _spng_rgb(data: bytes) -> Optional[np.ndarray]:
    """libspng's decode of an 8-bit RGB PNG, or None (not installed, damaged bytes: the caller's decoders decide)."""
    try:
        import pyspng
    except ImportError:
        return None
    try:
        pixels = pyspng.load(data)
    except Exception:  # damaged bytes: OpenCV, then PIL (which raises the error the user sees)
        return None
    if pixels.dtype == np.uint8 and pixels.ndim == 3 and pixels.shape[2] == 3:
        return pixels
    return None


def decode_pair(images: Any, record_id: str) -> tuple[np.ndarray, Optional[np.ndarray]]:
    """A record's (source, edited) pixels from an image shard (or a worker's ``RecordImages``), each decoded once
    by :func:`decode_pixels`; edited is None when the shard holds no edited image."""
    edited = images.edited_bytes(record_id)
    return decode_pixels(images.source_bytes(record_id)), None if edited is None else decode_pixels(edited)
