"""HQ-Edit (``UCSC-VLAA/HQ-Edit``): synthetic high-resolution pairs with a forward and an inverse instruction.

Columns: ``input`` (caption), ``input_image``, ``edit``, ``inverse_edit``, ``output`` (caption), ``output_image``; split
train. No id column: ``origin_key`` is the row number. The pair is read forwards (``edit``); ``inverse_edit`` (which
undoes it, from the output back to the input) is kept in ``meta``, not as a variant, because it is another edit.
"""
from __future__ import annotations

from curate.sources import RawPair
from curate.sources.presets import register_preset
from curate.sources.presets.base import TablePreset, text_list


@register_preset("hq_edit")
class HQEdit(TablePreset):
    hub_id = "UCSC-VLAA/HQ-Edit"
    licence = "CC-BY-NC-4.0"
    required = ("input_image", "edit", "output_image")

    def pair(self, row, index):
        errors: list[str] = []
        meta = {"row": index, **{k: row[k] for k in ("input", "output", "inverse_edit") if k in row}}
        pair = RawPair(self.origin, f"row {index}", row.get("edit"),
                       self.image(row.get("input_image"), "source", errors),
                       self.image(row.get("output_image"), "edited", errors),
                       instruction_variants=text_list(row.get("edit")), meta=meta)
        pair.error = errors[0] if errors else None
        return pair
