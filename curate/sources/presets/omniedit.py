"""OmniEdit (``TIGER-Lab/OmniEdit-Filtered-1.2M``): specialist-generated pairs filtered by VIEScore.

Columns: ``omni_edit_id``, ``task``, ``src_img``, ``edited_img``, ``edited_prompt_list`` (a list of instructions for
the same pair), ``width``, ``height``, ``sc_score_1``, ``sc_score_2``, ``sc_reasoning``, ``pq_score``, ``pq_reasoning``,
``o_score``; split train. ``origin_key`` is ``omni_edit_id``.

Every entry of ``edited_prompt_list`` is kept in ``instruction_variants``; the primary instruction is the first
non-empty one (the list's own order; the rewrite stage may refine it later).
"""
from __future__ import annotations

from curate.sources import RawPair
from curate.sources.presets import register_preset
from curate.sources.presets.base import TablePreset, map_edit_type, table, text_list

# OmniEdit's seven task families (the paper's names, several spellings) -> editkit.taxonomy
TASKS = table({
    "addition": "add", "add": "add", "object_addition": "add",
    "removal": "remove", "remove": "remove", "object_removal": "remove",
    "swap": "replace", "object_swap": "replace", "replace": "replace", "object_replacement": "replace",
    "attribute_modification": "adjust", "attribute": "adjust",
    "background_swap": "background", "background": "background",
    "environment": "tone", "env": "tone", "environment_modification": "tone",
    "style": "style", "style_transfer": "style",
})
SCORES = ("sc_score_1", "sc_score_2", "pq_score", "o_score", "sc_reasoning", "pq_reasoning", "width", "height")


@register_preset("omniedit")
class OmniEdit(TablePreset):
    hub_id = "TIGER-Lab/OmniEdit-Filtered-1.2M"
    licence = "MIT"
    required = ("omni_edit_id", "src_img", "edited_img", "edited_prompt_list")

    def pair(self, row, index):
        errors: list[str] = []
        variants = text_list(row.get("edited_prompt_list"))
        meta = {"row": index, **{k: row[k] for k in SCORES if k in row}}
        pair = RawPair(self.origin, str(row["omni_edit_id"]), variants[0] if variants else None,
                       self.image(row.get("src_img"), "source", errors),
                       self.image(row.get("edited_img"), "edited", errors),
                       instruction_variants=variants, meta=meta)
        if not variants:
            errors.append("missing instruction: edited_prompt_list has no text")
        map_edit_type(row.get("task"), TASKS, pair)
        pair.error = errors[0] if errors else None
        return pair
