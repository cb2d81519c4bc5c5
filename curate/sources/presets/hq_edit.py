"""HQ-Edit (``UCSC-VLAA/HQ-Edit``): synthetic high-resolution pairs with a forward and an inverse instruction.

Columns: ``input`` (caption), ``input_image``, ``edit``, ``inverse_edit``, ``output`` (caption), ``output_image``; split
train. No id column: ``origin_key`` is the row number. The pair is read forwards (``edit``); ``inverse_edit`` (which
undoes it, from the output back to the input) is kept in ``meta``, not as a variant, because it is another edit.
"""
from __future__ import annotations

from curate.sources.presets import register_preset
from curate.sources.presets.base import RowPreset


@register_preset("hq_edit")
class HQEdit(RowPreset):
    hub_id = "UCSC-VLAA/HQ-Edit"
    licence = "CC-BY-NC-4.0"
    required = ("input_image", "edit", "output_image")
    instruction_column, source_column, edited_column = "edit", "input_image", "output_image"
    meta_columns = ("input", "output", "inverse_edit")
