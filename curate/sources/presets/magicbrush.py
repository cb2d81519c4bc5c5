"""MagicBrush (``osunlp/MagicBrush``): multi-turn, human-annotated edits of COCO images with free-form masks.

Columns: ``img_id`` (COCO id), ``turn_index`` (1 = the real image; later turns start from the previous edit),
``source_img``, ``mask_img`` (free-form, the edit region marked), ``instruction``, ``target_img``; splits train/dev.
``origin_key`` is ``<img_id>/turn<turn_index>``. No edit types are given.
"""
from __future__ import annotations

from curate.sources import RawPair
from curate.sources.presets import masks, register_preset
from curate.sources.presets.base import TablePreset, text_list


@register_preset("magicbrush")
class MagicBrush(TablePreset):
    hub_id = "osunlp/MagicBrush"
    default_split = "train"
    required = ("img_id", "turn_index", "source_img", "target_img", "instruction")

    def pair(self, row, index):
        errors: list[str] = []
        key = f"{row['img_id']}/turn{row['turn_index']}"
        source = self.image(row.get("source_img"), "source", errors)
        pair = RawPair(self.origin, key, row.get("instruction"), source,
                       self.image(row.get("target_img"), "edited", errors),
                       instruction_variants=text_list(row.get("instruction")),
                       meta={"row": index, "img_id": str(row["img_id"]), "turn_index": row["turn_index"]})
        mask = row.get("mask_img")
        if mask is not None and not errors:
            data = self.image(mask, "mask", errors)
            if data is not None:
                try:
                    pair.gt_mask = masks.painted_mask(data, source)
                except Exception as error:  # an unreadable mask is the pair's problem, not ingest's
                    errors.append(f"corrupt mask: {type(error).__name__}: {error}")
        pair.error = errors[0] if errors else None
        return pair
