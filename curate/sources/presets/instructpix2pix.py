"""InstructPix2Pix (``timbrooks/instructpix2pix-clip-filtered``): generated pairs with Prompt-to-Prompt.

Columns: ``original_prompt``, ``original_image``, ``edit_prompt``, ``edited_prompt``, ``edited_image``; split train.
The dataset has no id column: ``origin_key`` is the row number in the split. No edit types, no masks.
"""
from __future__ import annotations

from curate.sources import RawPair
from curate.sources.presets import register_preset
from curate.sources.presets.base import TablePreset, text_list


@register_preset("instructpix2pix")
class InstructPix2Pix(TablePreset):
    hub_id = "timbrooks/instructpix2pix-clip-filtered"
    required = ("original_image", "edit_prompt", "edited_image")

    def pair(self, row, index):
        errors: list[str] = []
        meta = {"row": index, **{k: row[k] for k in ("original_prompt", "edited_prompt") if k in row}}
        pair = RawPair(self.origin, f"row {index}", row.get("edit_prompt"),
                       self.image(row.get("original_image"), "source", errors),
                       self.image(row.get("edited_image"), "edited", errors),
                       instruction_variants=text_list(row.get("edit_prompt")), meta=meta)
        pair.error = errors[0] if errors else None
        return pair
