"""CoCoEdit-40K (``wyh6666/CoCoEdit-40K``), CoCoEdit's RL prompt set, from its unpacked release.

Layout (its dataset card and the reader in CoCoEdit's training code): the metadata file at the root
(``train_metadata.jsonl`` in the release, ``metadata.jsonl`` in CoCoEdit's reader; either is found), one object
per line with ``prompt`` (the instruction), ``image`` and ``mask`` (paths relative to the root; the images and masks
come in zip parts, unpacked beside the file). There is no edited image: it is a prompt set for RL. In its masks
**white marks the region to KEEP** (CoCoEdit scores the white region and regularises it as background); they are
inverted to our convention (True = should change), the max over channels below 128 being the edit region, as
CoCoEdit's scorer binarises them. Masks become ``mask_source: gt``; records have ``has_edited = False``.

``path`` is the release folder (or its metadata file). Every line yields a pair: one that cannot be used (bad
JSON, a missing field, a path leaving the release, a missing or unreadable file) becomes a rejected record.
"""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from curate.sources import RawPair
from curate.sources.presets import masks, register_preset, tables
from curate.sources.presets.base import TablePreset, text_list

METADATA_NAMES = ("train_metadata.jsonl", "metadata.jsonl")  # looked for in this order in the release folder


def keep_mask_to_edit_png(data: bytes) -> bytes:
    """A CoCoEdit mask (white = keep) -> a PNG in our convention (white = should change), so ingest's mask loader
    applies its size and aspect checks."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        image.load()
        channels = np.asarray(image.convert("RGB"))
    buffer = io.BytesIO()
    Image.fromarray((channels.max(axis=2) < 128).astype(np.uint8) * 255).save(buffer, format="PNG")
    return buffer.getvalue()


@register_preset("cocoedit_40k")
class CoCoEdit40K(TablePreset):
    hub_id = ""  # the hub repository holds zip parts, not a loadable dataset: unpack it and give the folder
    dataset = "wyh6666/CoCoEdit-40K"
    required = ("prompt", "image", "mask")

    def open(self) -> tables.Table:
        if not self.path:
            raise ValueError("ingest.preset.path: cocoedit_40k needs the unpacked CoCoEdit-40K release "
                             f"({' or '.join(METADATA_NAMES)} + the unzipped image and mask parts)")
        path = Path(self.path)
        found = [path] if path.is_file() else [path / name for name in METADATA_NAMES if (path / name).is_file()]
        if not found:
            raise ValueError(f"ingest.preset.path: {' or '.join(METADATA_NAMES)} not found in {path}; point it at the "
                             "unpacked CoCoEdit-40K release (or at its metadata file)")
        file = found[0]
        return tables.Table(root=file.parent, files=[file], columns=tables._columns(file),
                            length=tables.count_rows(file))

    def pair(self, row, index) -> RawPair:
        errors: list[str] = []
        prompt = row.get("prompt")
        pair = RawPair(self.origin, str(row.get("image") or f"line {index + 1}"), prompt, None, None, has_edited=False,
                       instruction_variants=text_list(prompt),
                       meta={"line": index + 1, "image_path": row.get("image"), "mask_path": row.get("mask")})
        not_text = [k for k in self.required if not isinstance(row.get(k), str) or not row[k].strip()]
        if not_text:
            pair.error = f"malformed metadata line: {', '.join(not_text)} missing or not text"
            return pair
        pair.source = self.read_path(row["image"], "source", errors)
        mask = self.read_path(row["mask"], "mask", errors)
        if mask is not None and not errors:
            try:
                edit = np.asarray(masks.decode(keep_mask_to_edit_png(mask)).convert("L")) > 127
            except Exception as error:  # corrupt or not an image: this record is rejected, the rest go on
                errors.append(f"unreadable mask: {row['mask']}: {type(error).__name__}")
            else:
                try:  # at the source's resolution: resized with a flag, or rejected when the aspect differs
                    masks.fit_mask(edit, pair.source).apply(pair)
                except masks.MaskProblem as problem:
                    errors.append(str(problem))
                except masks.SourceUnreadable:
                    pair.gt_mask = edit  # ingest rejects the pair for its source image
        pair.error = errors[0] if errors else None
        return pair
