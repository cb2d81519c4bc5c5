"""Target boxes from an MLLM (Qwen2.5-VL convention): the second detector of the grounded masks.

``masks.grounding.detector: mllm`` asks the MLLM client (any backend: an OpenAI-compatible server or a local
Qwen2.5-VL through transformers) for the boxes of a record's target phrases, as JSON, then SAM2 segments them as it
does Grounding-DINO's boxes.

Coordinates. Qwen2.5-VL grounds in ABSOLUTE PIXELS of the image as the model saw it: its processor first resizes
every image with ``smart_resize`` (both sides multiples of 28, the pixel count within ``[min_pixels,
max_pixels]``), and ``bbox_2d`` refers to that resized image, not to the file (Qwen's cookbooks rescale by
``original / (image_grid_thw * 14)``). :func:`model_view_size` is that rule exactly (transformers'
``smart_resize``, for every aspect ratio the model accepts: up to 200:1). The image is first resized HERE to
``model_view_size`` within ``[min_pixels, client.max_pixels]`` (what is uploaded); the model's frame is then what the
serving processor's own ``smart_resize`` makes of the uploaded image, with ITS pixel budget: the loaded processor's
for the transformers backend, ``client.server_min_pixels`` / ``client.server_max_pixels`` for a server (default: the
Qwen2/2.5-VL checkpoints' processor, 56² to 12,845,056). The prompt states that frame, and boxes are rescaled from it
to the working image.

Validation. The reply must match :class:`BoxReply` (a list of ``{"bbox_2d": [x1, y1, x2, y2], "label": ...}``, or
``{"boxes": [...]}``); otherwise one repair round, then ``fallback:<reason>`` (no boxes: the record keeps its diff
mask, flagged). Each box is clipped to the image; non-finite, reversed and degenerate (< 1 px after clipping) boxes
are dropped, each with a recorded reason.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Annotated, Any, Optional

import numpy as np

from editkit.mllm.config import ClientConfig
from editkit.config_meta import Range

FACTOR = 28  # Qwen2.5-VL: 14 px patches, 2x2 merged
QWEN_MIN_PIXELS = 56 * 56  # the Qwen2-VL image processor's default lower bound
MAX_REPLY_BOXES = 64  # a longer list is not an answer to "locate these phrases"


@dataclass
class MLLMGroundingParams:
    """``masks.grounding.mllm``: the client and the prompt used when ``detector: mllm``."""

    client: ClientConfig = field(default_factory=ClientConfig)
    """the MLLM client asked for boxes; backend none cannot ground (openai or transformers)"""
    prompt_version: str = "v1"
    """the box prompt: editkit/mllm/prompts/ground_boxes_<version>.txt"""
    min_pixels: Annotated[int, Range(ge=1)] = QWEN_MIN_PIXELS
    """smart_resize lower bound; the upper bound is client.max_pixels"""


@dataclass
class BoxDetection:
    """One image's MLLM boxes, in the pixels of the image given to :meth:`MLLMBoxDetector.detect`."""

    boxes: np.ndarray  # (n, 4) float xyxy
    labels: list[str]
    status: str  # ok | repaired | fallback:<reason> (editkit.mllm.structured)
    dropped: list[str] = field(default_factory=list)  # one reason per dropped box
    errors: list[str] = field(default_factory=list)  # why a reply was not usable (fallback / repair)
    clipped: int = 0  # boxes that reached outside the image and were clipped
    view_size: tuple[int, int] = (0, 0)  # (height, width) of the model's frame: what its processor made of our image


def model_view_size(height: int, width: int, min_pixels: int = QWEN_MIN_PIXELS, max_pixels: int = 12845056,
                    factor: int = FACTOR) -> tuple[int, int]:
    """(height, width) Qwen2/2.5-VL's ``smart_resize`` gives (the rule of transformers' Qwen2-VL image processor):
    sides rounded to multiples of ``factor``; above ``max_pixels`` both scaled down (floor), below ``min_pixels``
    scaled up (ceil), keeping the aspect ratio; a ratio above 200 is refused as the processor refuses it."""
    if min(height, width) < 1:
        raise ValueError(f"image size must be positive, got {height}x{width}")
    if max(height, width) / min(height, width) > 200:
        raise ValueError(f"aspect ratio above 200 ({width}x{height}): Qwen2.5-VL cannot take this image")
    h_bar, w_bar = round(height / factor) * factor, round(width / factor) * factor  # a thin side may round to 0
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


def processor_bounds(client: Any) -> tuple[int, int]:
    """``(min_pixels, max_pixels)`` of the processor that serves the model: the loaded processor's own ``size``
    (transformers backend), else the configured server budget (``client.server_min_pixels`` / ``server_max_pixels``)."""
    image_processor = getattr(getattr(client.backend, "processor", None), "image_processor", None)
    try:
        size = dict(getattr(image_processor, "size", None) or {})
    except (TypeError, ValueError):
        size = {}
    if size.get("shortest_edge") and size.get("longest_edge"):
        return int(size["shortest_edge"]), int(size["longest_edge"])
    return client.config.server_min_pixels, client.config.server_max_pixels


def _reply_models():
    """The pydantic schema (built on first use: pydantic is imported only when the MLLM detector is)."""
    from pydantic import BaseModel, ConfigDict, Field, model_validator

    class Box(BaseModel):
        model_config = ConfigDict(extra="ignore")  # Qwen sometimes adds e.g. "score"; only the box is used

        bbox_2d: list[float] = Field(min_length=4, max_length=4)
        label: str = ""

    class BoxReply(BaseModel):
        model_config = ConfigDict(extra="forbid")

        boxes: list[Box] = Field(max_length=MAX_REPLY_BOXES)

        @model_validator(mode="before")
        @classmethod
        def _bare_list(cls, data: Any) -> Any:
            return {"boxes": data} if isinstance(data, list) else data  # Qwen's native answer is a bare list

    return BoxReply


def clean_boxes(raw: list[tuple[list[float], str]], width: int, height: int
                ) -> tuple[np.ndarray, list[str], list[str], int]:
    """Clip boxes to a ``width`` x ``height`` image; drop non-finite, reversed and degenerate ones with a reason.

    Returns ``(boxes (n, 4), labels, dropped reasons, number clipped)``."""
    kept, labels, dropped, clipped = [], [], [], 0
    limits = np.array([width, height, width, height], dtype=float)
    for index, (coords, label) in enumerate(raw):
        box = np.asarray(coords, dtype=float)
        shown = [round(float(v), 2) for v in box]
        if not np.isfinite(box).all():
            dropped.append(f"box {index} {shown}: non-finite coordinates")
            continue
        if box[2] < box[0] or box[3] < box[1]:
            dropped.append(f"box {index} {shown}: corners reversed (x2 < x1 or y2 < y1)")
            continue
        inside = np.clip(box, 0, limits)
        if not np.array_equal(inside, box):
            clipped += 1
        w, h = inside[2] - inside[0], inside[3] - inside[1]
        if w < 1 or h < 1:
            dropped.append(f"box {index} {shown}: degenerate inside the {width}x{height} image "
                           f"({w:.2f} x {h:.2f} px after clipping)")
            continue
        kept.append(inside)
        labels.append(label)
    return np.array(kept, dtype=float).reshape(-1, 4), labels, dropped, clipped


class MLLMBoxDetector:
    """The client (probed / loaded once) and the prompt; :meth:`detect` asks for a batch of images at once."""

    def __init__(self, params: MLLMGroundingParams):
        from editkit.mllm.backends import MLLMError
        from editkit.mllm.client import Client
        from editkit.mllm.prompts import load_prompt

        if params.client.backend == "none":
            raise MLLMError("masks.grounding.detector: mllm needs an MLLM: set masks.grounding.mllm.client.backend "
                            "to openai (with endpoint) or transformers (with model), or use detector: grounding_dino")
        self.params = params
        self.prompt = load_prompt("ground_boxes", params.prompt_version)
        self.reply_model = _reply_models()
        self.client = Client(params.client)  # fails fast: endpoint down, model missing, key unset

    def detect(self, images: list[Any], phrases: list[list[str]], max_boxes: int) -> list[BoxDetection]:
        """``images``: PIL images; boxes come back in each image's own pixels, at most ``max_boxes`` each."""
        from editkit.mllm.messages import Request, user
        from editkit.mllm.structured import ask_json

        bounds, served = (self.params.min_pixels, self.params.client.max_pixels), processor_bounds(self.client)
        frames: list[Optional[tuple[tuple[int, int], tuple[int, int]]]] = []
        for image in images:
            try:
                sent = model_view_size(image.height, image.width, *bounds)
                # The serving processor resizes what we send once more, with its own budget: the identity when that
                # budget contains ours, a smaller frame when it does not. The model answers in that frame.
                frames.append((sent, model_view_size(*sent, *served)))
            except ValueError:  # an aspect ratio the model does not accept: no request, the record keeps its mask
                frames.append(None)
        requests = []
        for image, words, frame in zip(images, phrases, frames):
            if frame is None:
                continue
            (sh, sw), (vh, vw) = frame
            text = self.prompt.render(phrases="; ".join(f'"{p}"' for p in words), width=str(vw), height=str(vh))
            shown = image if image.size == (sw, sh) else image.resize((sw, sh), _bicubic())
            requests.append(Request((user(shown, text),), **self.prompt.stamp()))
        answers = iter(ask_json(self.client, requests, self.reply_model, allow_array=True))
        out = []
        for image, frame in zip(images, frames):
            if frame is None:
                out.append(BoxDetection(np.zeros((0, 4)), [], "fallback:aspect_ratio", errors=[
                    f"{image.width}x{image.height}: aspect ratio above 200, which Qwen2/2.5-VL's processor refuses"]))
                continue
            (vh, vw), answer = frame[1], next(answers)
            if answer.value is None:
                out.append(BoxDetection(np.zeros((0, 4)), [], answer.status, errors=answer.errors, view_size=(vh, vw)))
                continue
            raw = [(box.bbox_2d, box.label) for box in answer.value.boxes]
            boxes, labels, dropped, clipped = clean_boxes(raw, vw, vh)
            if len(boxes) > max_boxes:
                dropped += [f"box beyond max_boxes={max_boxes} (kept the first {max_boxes} in reply order)"] * (
                    len(boxes) - max_boxes)
                boxes, labels = boxes[:max_boxes], labels[:max_boxes]
            scale = np.array([image.width / vw, image.height / vh] * 2)
            out.append(BoxDetection(boxes * scale, labels, answer.status, dropped, answer.errors, clipped, (vh, vw)))
        return out

    @property
    def stats(self):
        return self.client.stats

    def close(self) -> None:
        self.client.close()


def _bicubic() -> Optional[int]:
    from PIL import Image

    return Image.BICUBIC  # what Qwen2-VL's processor resamples with
