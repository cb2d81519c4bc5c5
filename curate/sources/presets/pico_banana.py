"""Pico-Banana-400K (Apple, ``apple/pico-banana-400k``): Nano-Banana edits of Open Images photos, as JSONL manifests.

Layout: ``sft.jsonl`` (single-turn successes; also the default ``split``), ``preference.jsonl``, ``multi-turn.jsonl``
beside the downloaded ``images/...`` outputs. A single-turn line has ``open_image_input_url`` (the Open Images
source, a URL), ``text`` (the instruction), ``summarized_text`` (a short version), ``output_image`` (a path relative to
the dataset folder, e.g. ``images/positive-edit/1.png``) and ``edit_type`` (a long English name); the dataset's
mapping script adds ``local_input_image``, the downloaded source. Paths resolve against the dataset folder
(``allow_outside_root`` lifts that); a source known only by its URL is rejected with that reason.

``origin_key`` is ``output_image`` (unique per edit). Both instructions are kept in ``instruction_variants``; the
primary is ``text``, the full instruction the edit was made from.
"""
from __future__ import annotations

from curate.sources import RawPair
from curate.sources.presets import register_preset
from curate.sources.presets.base import TablePreset, map_edit_type, table, text_list

# Pico-Banana edit_type names seen in the released manifests -> editkit.taxonomy; others get None + a flag
EDIT_TYPES = table({
    "Remove an existing object": "remove",
    "Add a new object to the scene": "add",
    "Replace one object category with another": "replace",
    "Change an object's attribute (e.g., color/material)": "recolor",
    "Change overall color tone (warm ↔ cool)": "tone",
    "Add film grain or vintage filter": "tone",
    "Strong artistic style transfer (e.g., Van Gogh/anime/etc.)": "style",
    "Zoom in": None,
    "Outpainting (extend canvas beyond boundaries)": None,
})
SOURCE_KEYS = ("local_input_image", "input_image", "open_image_input_url")


@register_preset("pico_banana")
class PicoBanana(TablePreset):
    hub_id = ""  # manifests on Apple's CDN, not a hub dataset: use the downloaded folder or a manifest file
    dataset = "apple/pico-banana-400k"
    licence = "CC-BY-NC-ND-4.0"
    default_split = "sft"
    required = ("text", "output_image")

    def open(self):
        if not self.path:
            raise ValueError("ingest.preset.path: pico_banana needs the downloaded folder (sft.jsonl + images/) "
                             "or one manifest .jsonl")
        return super().open()

    def pair(self, row, index):
        errors: list[str] = []
        output = row.get("output_image")
        source_path = next((row[k] for k in SOURCE_KEYS if isinstance(row.get(k), str) and row[k]), None)
        key = output if isinstance(output, str) and output else f"row {index}"
        pair = RawPair(self.origin, key, row.get("text"), None, None,
                       instruction_variants=text_list([row.get("text"), row.get("summarized_text")]),
                       meta={"row": index, **{k: row[k] for k in ("open_image_input_url", "summarized_text") if k in row}})
        if source_path is None:
            errors.append("missing source image: no local_input_image or open_image_input_url")
        else:
            pair.source = self.read_path(source_path, "source", errors)
        if not isinstance(output, str) or not output:
            errors.append("missing edited image: empty output_image")
        else:
            pair.edited = self.read_path(output, "edited", errors)
        map_edit_type(row.get("edit_type"), EDIT_TYPES, pair)
        pair.error = errors[0] if errors else None
        return pair
