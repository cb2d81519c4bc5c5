"""MLLM quality scores: instruction clarity, mask accuracy and target prominence, each an integer 0-10.

An optional sub-step of the ``score`` stage (``score.quality``), off by default and whenever no MLLM is configured
(``client.backend: none``). Per ok record with a mask, ONE request (prompt ``prompts/quality_<version>.txt``) shows
the judge the source image, the edited image (when there is one), the instruction, and the edit mask drawn over the
image in which the target is visible (:func:`render_overlay`: the edited image for ``add``, else the source). The
reply is strict JSON (:class:`QualityOutput`, one repair round); the three scores go into ``record["scores"]``
(names in :mod:`editkit.scores`) and ``select.filters`` thresholds them (``instruction_clarity_min``, ...).

A record whose judge reply is unusable gets no quality scores (so no quality filter rejects it: a filter only
rejects what it measured), the flag ``quality_unscored`` and its reasons in ``meta["quality"]``.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Annotated, Any

import numpy as np

from editkit.mllm.config import ClientConfig
from editkit.needs import Needs
from editkit.scores import INSTRUCTION_CLARITY, MASK_ACCURACY, TARGET_PROMINENCE
from editkit.config_meta import Range

SCORES = (INSTRUCTION_CLARITY, MASK_ACCURACY, TARGET_PROMINENCE)
SCALE = (0, 10)
OVERLAY_RGB = (255, 0, 0)
OVERLAY_ALPHA = 0.45  # inside the mask; the mask's outline is drawn solid


@dataclass
class QualityParams:
    """``score.quality`` in params.yaml."""

    enabled: bool = False
    """score instruction clarity, mask accuracy and target prominence with an MLLM; also needs client.backend other than
    none"""
    client: ClientConfig = field(default_factory=ClientConfig)
    """the MLLM client that judges quality"""
    prompt_version: str = "v1"
    """the quality prompt: editkit/mllm/prompts/quality_<version>.txt"""
    max_side: Annotated[int, Range(ge=1)] = 768
    """every image is resized to this longest side before it is sent (bounds vision tokens)"""

    @property
    def active(self) -> bool:
        return self.enabled and self.client.backend != "none"


def render_overlay(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``image`` (HxWx3 uint8) with ``mask`` tinted red at ``OVERLAY_ALPHA`` and its outline in solid red."""
    from curate.masks.refine import erode

    mask = np.asarray(mask, dtype=bool)
    if mask.shape != image.shape[:2]:
        raise ValueError(f"mask {mask.shape} and image {image.shape[:2]} sizes differ")
    out = image.astype(np.float64)
    out[mask] = (1 - OVERLAY_ALPHA) * out[mask] + OVERLAY_ALPHA * np.array(OVERLAY_RGB, np.float64)
    out = np.rint(out).astype(np.uint8)
    out[mask & ~erode(mask, 1)] = OVERLAY_RGB
    return out


def _output_model():
    from pydantic import BaseModel, ConfigDict, Field

    score = dict(ge=SCALE[0], le=SCALE[1], strict=True)  # integers only: "7.5" or "high" is not an answer

    class QualityOutput(BaseModel):
        model_config = ConfigDict(extra="forbid")

        instruction_clarity: int = Field(**score)
        mask_accuracy: int = Field(**score)
        target_prominence: int = Field(**score)
        reason: str = Field(default="", max_length=500)

    return QualityOutput


class QualityJudge:
    """The batch -> batch quality step (client probed / model loaded once, here)."""

    needs = Needs(("id", "status", "has_edited", "edit_type", "mask", "scores", "meta"))  # fields it reads

    def __init__(self, params: QualityParams):
        from editkit.mllm.client import Client
        from editkit.mllm.prompts import load_prompt

        self.params = params
        self.prompt = load_prompt("quality", params.prompt_version)
        self.output_model = _output_model()
        self.client = Client(params.client)

    @property
    def counters(self) -> dict[str, int]:
        return {f"quality_{k}": v for k, v in self.client.stats.items()}

    def __call__(self, records: list[dict[str, Any]], images: Any) -> list[dict[str, Any]]:
        from editkit import schema
        from editkit.mllm.structured import ask_json

        todo, requests = [], []
        for record in records:
            if not schema.is_ok(record) or record.get("mask") is None:
                continue
            request = self._request(record, images)
            if request is not None:
                todo.append(record)
                requests.append(request)
        for record, answer in zip(todo, ask_json(self.client, requests, self.output_model) if requests else []):
            if answer.value is None:
                schema.add_flag(record, "quality_unscored")
            else:
                record["scores"] = {**(record.get("scores") or {}),
                                    **{name: float(getattr(answer.value, name)) for name in SCORES}}
            _add_meta(record, {"status": answer.status, "reason": answer.value.reason if answer.value else "",
                               "errors": [e[:300] for e in answer.errors], "prompt": self.prompt.tag})
        return records

    def _request(self, record: dict[str, Any], images: Any):
        from editkit import rle, schema, taxonomy
        from editkit.mllm.messages import Request, user

        try:
            source = images.source(record["id"])
            edited = images.edited(record["id"]) if record.get("has_edited") is not False else None
        except Exception as error:  # damaged since ingest: the pixel scores already rejected such a record
            schema.add_flag(record, "quality_unscored")
            _add_meta(record, {"status": "fallback:image", "errors": [f"{type(error).__name__}: {error}"]})
            return None
        edit_type = taxonomy.EDIT_TYPES.get(record.get("edit_type") or "")
        on_edited = edited is not None and edit_type is not None and edit_type.mask_rule == "edited"
        overlay = render_overlay(edited if on_edited else source, rle.decode(record["mask"]))
        parts: list[Any] = ["SOURCE image:", self._fit(source)]
        if edited is not None:
            parts += ["EDITED image:", self._fit(edited)]
        parts += ["MASK OVERLAY:", self._fit(overlay),
                  f"Instruction: {record.get('instruction_refined') or record.get('instruction') or ''}"]
        text = self.prompt.render(overlay_on="EDITED" if on_edited else "SOURCE")
        return Request((user(text, *parts),), **self.prompt.stamp())

    def _fit(self, image: np.ndarray):
        from PIL import Image

        pil = Image.fromarray(image)
        scale = self.params.max_side / max(pil.size)
        if scale < 1:
            pil = pil.resize((max(1, round(pil.width * scale)), max(1, round(pil.height * scale))), Image.BICUBIC)
        return pil

    def close(self) -> None:
        self.client.close()


def _add_meta(record: dict[str, Any], quality: dict[str, Any]) -> None:
    try:
        meta = json.loads(record.get("meta") or "{}")
    except json.JSONDecodeError:
        meta = {"previous_meta": record.get("meta")}
    if not isinstance(meta, dict):
        meta = {"previous_meta": meta}
    meta["quality"] = quality
    record["meta"] = json.dumps(meta, sort_keys=True)
