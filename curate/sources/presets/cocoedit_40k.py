"""CoCoEdit-40K (Hugging Face ``wyh6666/CoCoEdit-40K``), CoCoEdit's RL prompt set, from its unpacked release.

Layout (its dataset card and the reader in CoCoEdit's training code): ``metadata.jsonl`` at the root, one object
per line with ``prompt`` (the instruction), ``image`` and ``mask`` (paths relative to the root; the images and masks
come in zip parts, unpacked beside the file). There is no edited image: it is a prompt set for RL. In its masks
**white marks the region to KEEP** (CoCoEdit scores the white region and regularises it as background); the reader
inverts them to our convention (True = should change), the max over channels below 128 being the edit region, as
CoCoEdit's scorer binarises them. Masks become ``mask_source: gt``; records have ``has_edited = False``.

Every line yields a pair: one that cannot be used (bad JSON, a missing field, a path leaving the release, a missing
or unreadable file) carries ``error`` and becomes a rejected record with the reason.
"""
from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Iterator

import numpy as np

from curate.sources import RawPair
from curate.sources.presets import MAX_FILE_BYTES, PresetParams, register_preset
from editkit.safe_paths import UnsafePath, resolve_inside

METADATA = "metadata.jsonl"
NAME = "cocoedit_40k"


def keep_mask_to_edit_png(data: bytes) -> bytes:
    """A CoCoEdit mask (white = keep) -> a PNG in our convention (white = should change)."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        image.load()
        channels = np.asarray(image.convert("RGB"))
    edit = channels.max(axis=2) < 128
    buffer = io.BytesIO()
    Image.fromarray(edit.astype(np.uint8) * 255).save(buffer, format="PNG")
    return buffer.getvalue()


class CoCoEdit40K:
    def __init__(self, params: PresetParams):
        self.root = Path(params.path)
        self.metadata = self.root / METADATA
        if not self.metadata.is_file():
            raise FileNotFoundError(f"{self.metadata} not found: point ingest.preset.path at the unpacked "
                                    f"CoCoEdit-40K release (metadata.jsonl + the unzipped image and mask parts)")
        self.origin = f"preset:{NAME}"

    def _lines(self) -> list[tuple[int, str]]:
        text = self.metadata.read_text(encoding="utf-8")
        return [(n, line) for n, line in enumerate(text.splitlines(), start=1) if line.strip()]

    def __len__(self) -> int:
        return len(self._lines())

    def __iter__(self) -> Iterator[RawPair]:
        for number, line in self._lines():
            yield self._pair(number, line)

    def _pair(self, number: int, line: str) -> RawPair:
        key = f"line {number}"
        pair = RawPair(self.origin, key, None, None, None, has_edited=False, meta={"line": number})
        try:
            entry = json.loads(line)
        except json.JSONDecodeError as error:
            pair.error = f"malformed metadata line: {error}"
            return pair
        if not isinstance(entry, dict):
            pair.error = "malformed metadata line: not a JSON object"
            return pair
        missing = [k for k in ("prompt", "image", "mask") if not entry.get(k)]
        not_text = [k for k in ("prompt", "image", "mask") if entry.get(k) and not isinstance(entry[k], str)]
        pair.instruction = entry.get("prompt") if isinstance(entry.get("prompt"), str) else None
        pair.meta.update(image_path=entry.get("image"), mask_path=entry.get("mask"))
        if missing or not_text:
            problem = f"missing {', '.join(missing)}" if missing else f"{', '.join(not_text)} must be strings"
            pair.error = f"malformed metadata line: {problem}"
            return pair
        pair.origin_key = entry["image"]
        pair.source = self._read(entry["image"], "source", pair)
        mask = self._read(entry["mask"], "mask", pair)
        if mask is not None and pair.error is None:
            try:
                pair.gt_mask = keep_mask_to_edit_png(mask)
            except Exception as error:  # corrupt or not an image: this record is rejected, the rest go on
                pair.error = f"unreadable mask: {entry['mask']}: {type(error).__name__}"
        return pair

    def _read(self, relative: str, role: str, pair: RawPair) -> bytes | None:
        try:
            return resolve_inside(self.root, relative, max_bytes=MAX_FILE_BYTES).read_bytes()
        except UnsafePath as error:
            problem = f"unsafe {role} path: {error}"
        except FileNotFoundError:
            problem = f"missing {role} image: {relative} not found"
        except OSError as error:
            problem = f"missing {role} image: {relative}: {error.strerror or error}"
        pair.error = pair.error or problem
        return None


@register_preset(NAME)
def cocoedit_40k(params: PresetParams) -> CoCoEdit40K:
    if params.options:
        raise ValueError(f"the {NAME} preset takes no options, got {sorted(params.options)}")
    return CoCoEdit40K(params)
