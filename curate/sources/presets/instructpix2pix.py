"""InstructPix2Pix (``timbrooks/instructpix2pix-clip-filtered``): generated pairs with Prompt-to-Prompt.

Columns: ``original_prompt``, ``original_image``, ``edit_prompt``, ``edited_prompt``, ``edited_image``; split train.
The dataset has no id column: ``origin_key`` is the row number in the split. No edit types, no masks.
"""
from __future__ import annotations

from curate.sources.presets import register_preset
from curate.sources.presets.base import RowPreset


@register_preset("instructpix2pix")
class InstructPix2Pix(RowPreset):
    hub_id = "timbrooks/instructpix2pix-clip-filtered"
    required = ("original_image", "edit_prompt", "edited_image")
    instruction_column, source_column, edited_column = "edit_prompt", "original_image", "edited_image"
    meta_columns = ("original_prompt", "edited_prompt")
