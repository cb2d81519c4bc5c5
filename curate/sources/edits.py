"""The procedural edits of the built-in sample, one function per edit type (names from :mod:`editkit.taxonomy`).

Each edit takes a clean canvas (HxWx3 uint8) and a random generator and returns an :class:`Edit`: the source image
(some edits first paste an object into the canvas), the edited image, the region the edit INTENDS to change, an
instruction and the target phrases. Outside ``region`` the edited image equals the source exactly.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from curate.sources import compose, photos


@dataclass
class Edit:
    edit_type: str
    source: np.ndarray
    edited: np.ndarray
    region: np.ndarray  # bool HxW: pixels the edit intends to change
    instruction: str
    target_phrases: list[str]
    meta: dict[str, Any] = field(default_factory=dict)


EditFn = Callable[[np.ndarray, np.random.Generator], Edit]
SHAPES = ("square", "circle", "triangle", "star")
WORDS = ("SALE", "HELLO", "OPEN", "CAFE", "2024", "LOVE", "STOP", "EXIT", "SUMMER", "NEW")
STYLES = {
    "sepia": "Make it look like an old sepia photograph",
    "posterize": "Turn the image into a flat poster with only a few colours",
    "sketch": "Turn the image into a pencil sketch",
    "invert": "Make the image look like a photographic negative",
}


def _noun(name: str) -> str:
    return name[4:] if name.startswith("the ") else name


def _random_object(rng: np.random.Generator) -> tuple[str, np.ndarray]:
    """An object to paste: half the time a cut-out from a bundled photo, else a coloured shape."""
    cuts = photos.objects()
    if cuts and rng.random() < 0.5:
        obj = cuts[int(rng.integers(len(cuts)))]
        return _noun(obj.name), photos.object_rgba(obj)
    colour = list(compose.RGB_COLOURS)[int(rng.integers(len(compose.RGB_COLOURS)))]
    shape = SHAPES[int(rng.integers(len(SHAPES)))]
    return f"{colour} {shape}", _shape_rgba(shape, compose.RGB_COLOURS[colour])


def _shape_rgba(shape: str, rgb: tuple[int, int, int], size: int = 256) -> np.ndarray:
    from PIL import Image, ImageDraw

    layer = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    fill = (*rgb, 255)
    if shape == "square":
        draw.rectangle((0, 0, size - 1, size - 1), fill=fill)
    elif shape == "circle":
        draw.ellipse((0, 0, size - 1, size - 1), fill=fill)
    elif shape == "triangle":
        draw.polygon([(size / 2, 0), (size - 1, size - 1), (0, size - 1)], fill=fill)
    else:  # five-pointed star
        angles = np.pi / 2 + np.arange(10) * np.pi / 5
        radii = np.where(np.arange(10) % 2 == 0, size / 2, size / 5)
        points = [(size / 2 + r * np.cos(a), size / 2 - r * np.sin(a)) for r, a in zip(radii, angles)]
        draw.polygon(points, fill=fill)
    return np.asarray(layer)


def recolor(canvas: np.ndarray, rng: np.random.Generator) -> Edit:
    region = _colour_region(canvas, rng)
    old = compose.colour_name(canvas[region])
    choices = [name for name in compose.HUES if name != old]
    new = choices[int(rng.integers(len(choices)))]
    edited = canvas.copy()
    edited[region] = compose.recolour(canvas[region][None], compose.HUES[new])[0]
    where = compose.position_words(region)
    return Edit("recolor", canvas, edited, region, f"Change the {old} area {where} to {new}", [f"{old} area"],
                {"from": old, "to": new})


def _colour_region(canvas: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A connected region of similar colour (2-30% of the image) around a random seed; an ellipse if none is found."""
    from scipy import ndimage
    from skimage.color import rgb2lab

    h, w = canvas.shape[:2]
    lab = rgb2lab(canvas)
    for _ in range(12):
        y, x = int(rng.integers(h)), int(rng.integers(w))
        similar = np.linalg.norm(lab - lab[y, x], axis=-1) < rng.uniform(12, 25)
        similar = ndimage.binary_opening(similar, iterations=2)
        labels, _ = ndimage.label(similar)
        if labels[y, x] == 0:
            continue
        region = ndimage.binary_fill_holes(labels == labels[y, x])
        if 0.02 <= region.mean() <= 0.3:
            return region
    yy, xx = np.mgrid[0:h, 0:w]
    cy, cx, ry, rx = rng.uniform(0.3, 0.7) * h, rng.uniform(0.3, 0.7) * w, rng.uniform(0.1, 0.2) * h, rng.uniform(0.1, 0.2) * w
    return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1


def add(canvas: np.ndarray, rng: np.random.Generator) -> Edit:
    noun, rgba = _random_object(rng)
    rgba, top, left = compose.place(rng, canvas.shape[0], rgba, 0.2, 0.45)
    edited, alpha = compose.paste(canvas, rgba, top, left)
    region = alpha > 0
    article = "an" if noun[0] in "aeiou" else "a"
    return Edit("add", canvas, edited, region, f"Add {article} {noun} {compose.position_words(region)}", [noun],
                {"object": noun, "box": [top, left, top + rgba.shape[0], left + rgba.shape[1]]})


def remove(canvas: np.ndarray, rng: np.random.Generator) -> Edit:
    """Paste an object into the canvas (that is the source), then inpaint it away (the edited image)."""
    from scipy import ndimage

    noun, rgba = _random_object(rng)
    rgba, top, left = compose.place(rng, canvas.shape[0], rgba, 0.15, 0.35)
    source, alpha = compose.paste(canvas, rgba, top, left)
    region = ndimage.binary_dilation(alpha > 0, iterations=2)  # fill a little beyond the object: no halo left
    edited = compose.fill_hole(source, region)
    return Edit("remove", source, edited, region, f"Remove the {noun}", [noun], {"object": noun})


def background(canvas: np.ndarray, rng: np.random.Generator, backdrop: np.ndarray | None = None,
               backdrop_name: str = "") -> Edit:
    """Paste a subject into the canvas (the source); the edited image has the same subject over a new backdrop.
    The edit region is everything except the subject's fully opaque pixels."""
    noun, rgba = _random_object(rng)
    rgba, top, left = compose.place(rng, canvas.shape[0], rgba, 0.35, 0.6)
    source, alpha = compose.paste(canvas, rgba, top, left)
    if backdrop is None:
        backdrop_name, backdrop = _texture_backdrop(canvas.shape[0], rng)
    edited, _ = compose.paste(backdrop, rgba, top, left)
    region = alpha < 1.0
    return Edit("background", source, edited, region, f"Replace the background with {backdrop_name}, keep the {noun}",
                [noun], {"subject": noun, "backdrop": backdrop_name})


def _texture_backdrop(size: int, rng: np.random.Generator) -> tuple[str, np.ndarray]:
    from PIL import Image

    textures = photos.textures()
    if not textures:  # plain colour gradient
        top, bottom = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
        t = np.linspace(0, 1, size)[:, None, None]
        return "a colour gradient", np.broadcast_to(top * (1 - t) + bottom * t, (size, size, 3)).round().astype(np.uint8)
    name = list(textures)[int(rng.integers(len(textures)))]
    gray = Image.open(textures[name]).convert("L").resize((size, size), Image.Resampling.LANCZOS)
    tint = rng.uniform(0.7, 1.0, 3)
    return name, np.clip(np.asarray(gray, np.float32)[..., None] * tint, 0, 255).round().astype(np.uint8)


def text(canvas: np.ndarray, rng: np.random.Generator) -> Edit:
    from PIL import Image, ImageDraw, ImageFont

    h, w = canvas.shape[:2]
    word = WORDS[int(rng.integers(len(WORDS)))]
    colour = list(compose.RGB_COLOURS)[int(rng.integers(len(compose.RGB_COLOURS)))]
    font = ImageFont.load_default(size=max(8, int(rng.uniform(0.08, 0.18) * h)))
    layer = Image.new("RGBA", (w, h), (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    x0, y0, x1, y1 = draw.textbbox((0, 0), word, font=font)
    pad = max(2, (y1 - y0) // 4)
    left = int(rng.integers(pad, max(pad + 1, w - (x1 - x0) - pad)))
    top = int(rng.integers(pad, max(pad + 1, h - (y1 - y0) - pad)))
    sticker = rng.random() < 0.5
    if sticker:  # a rounded label behind the word
        bg = (255, 255, 255, 255) if colour != "white" else (20, 20, 20, 255)
        draw.rounded_rectangle((left - pad, top - pad, left + x1 - x0 + pad, top + y1 - y0 + pad), radius=pad, fill=bg)
    draw.text((left - x0, top - y0), word, font=font, fill=(*compose.RGB_COLOURS[colour], 255))
    edited, alpha = compose.paste(canvas, np.asarray(layer), 0, 0)
    region = alpha > 0
    what = f'a sticker that says "{word}" in {colour} letters' if sticker else f'the text "{word}" in {colour}'
    return Edit("text", canvas, edited, region, f"Add {what} {compose.position_words(region)}", [f'text "{word}"'],
                {"word": word, "sticker": sticker})


def style(canvas: np.ndarray, rng: np.random.Generator) -> Edit:
    name = list(STYLES)[int(rng.integers(len(STYLES)))]
    image = canvas.astype(np.float32)
    if name == "sepia":
        matrix = np.array([[0.393, 0.769, 0.189], [0.349, 0.686, 0.168], [0.272, 0.534, 0.131]], np.float32)
        out = image @ matrix.T
    elif name == "posterize":
        out = np.floor(image / 64) * 64 + 32
    elif name == "sketch":
        from skimage.filters import sobel

        edges = sobel(image.mean(-1) / 255.0)
        out = np.repeat((255 * (1 - np.clip(edges * 4, 0, 1)))[..., None], 3, axis=-1)
    else:
        out = 255 - image
    edited = np.clip(np.round(out), 0, 255).astype(np.uint8)
    region = np.ones(canvas.shape[:2], bool)  # a global edit: the whole image is the edit region
    return Edit("style", canvas, edited, region, STYLES[name], ["the whole image"], {"style": name})


EDITS: dict[str, EditFn] = {"recolor": recolor, "add": add, "remove": remove, "background": background,
                            "text": text, "style": style}
