"""AnyEdit (``Bin1117/AnyEdit``): 2.5M pairs over 25 edit types in AnyEdit's own names.

Columns: ``image_id``, ``edit_instruction``, ``edit_type``, ``image_file`` (source), ``edited_file``, ``visual_input``
(an extra image for the visual-condition types, else empty), ``input`` / ``output`` (captions); splits
train/validation. ``image_id`` repeats across edits of the same photo, so ``origin_key`` is ``<image_id> (row N)``.

A row with a ``visual_input`` is flagged ``visual_input_unused``: our pairs have no slot for a second condition
image, and an edit that needs one is not judged fairly without it.
"""
from __future__ import annotations

from curate.sources import RawPair
from curate.sources.presets import register_preset
from curate.sources.presets.base import TablePreset, map_edit_type, table, text_list

VISUAL_INPUT_FLAG = "visual_input_unused"

# AnyEdit edit_type -> editkit.taxonomy (None: no equivalent, the record gets edit_type None + a flag)
EDIT_TYPES = table({
    "add": "add", "remove": "remove", "replace": "replace",
    "color_alter": "recolor", "appearance_alter": "adjust", "material_change": "material",
    "action_change": "action", "textual_change": "text", "counting": "adjust",
    "background_change": "background", "tone_transfer": "tone", "style_change": "style",
    "movement": None, "relation": None, "resize": None, "rotation_change": None, "outpaint": None,
    "outpainting": None, "implicit_change": None,
    "visual_bbox": None, "visual_depth": None, "visual_material_transfer": None, "visual_reference": None,
    "visual_scribble": None, "visual_segment": None, "visual_sketch": None,
})


@register_preset("anyedit")
class AnyEdit(TablePreset):
    hub_id = "Bin1117/AnyEdit"
    licence = "CC-BY-4.0"
    required = ("image_id", "edit_instruction", "edit_type", "image_file", "edited_file")

    def pair(self, row, index):
        errors: list[str] = []
        meta = {"row": index, "image_id": str(row["image_id"]),
                **{k: row[k] for k in ("input", "output") if k in row}}
        pair = RawPair(self.origin, f"{row['image_id']} (row {index})", row.get("edit_instruction"),
                       self.image(row.get("image_file"), "source", errors),
                       self.image(row.get("edited_file"), "edited", errors),
                       instruction_variants=text_list(row.get("edit_instruction")), meta=meta)
        map_edit_type(row.get("edit_type"), EDIT_TYPES, pair)
        if _present(row.get("visual_input")):
            pair.flags.append(VISUAL_INPUT_FLAG)
            pair.meta["visual_input"] = True
        pair.error = errors[0] if errors else None
        return pair


def _present(cell) -> bool:
    if cell is None:
        return False
    if isinstance(cell, dict):
        return bool(cell.get("bytes") or cell.get("path"))
    return bool(cell) if isinstance(cell, (bytes, str)) else True
