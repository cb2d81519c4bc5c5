"""MagicBrush (``osunlp/MagicBrush``): multi-turn, human-annotated edits of COCO images with free-form masks.

Columns: ``img_id`` (COCO id), ``turn_index`` (1 = the real image; later turns start from the previous edit),
``source_img``, ``mask_img`` (free-form, the edit region marked), ``instruction``, ``target_img``; splits train/dev.
``origin_key`` is ``<img_id>/turn<turn_index>``. No edit types are given. Licence CC-BY-4.0 (dataset card).
The hub files are ``data/{train,dev}-NNNNN-of-NNNNN-<hash>.parquet``; ``mask_img`` is the photo with the edited region
erased (transparent), read by its alpha channel (:func:`curate.sources.presets.masks.read_mask`).
"""
from __future__ import annotations

from curate.sources import RawPair
from curate.sources.presets import register_preset
from curate.sources.presets.base import TablePreset, text_list


@register_preset("magicbrush")
class MagicBrush(TablePreset):
    hub_id = "osunlp/MagicBrush"
    licence = "CC-BY-4.0"
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
        self.read_mask(pair, row.get("mask_img"), errors)
        pair.error = errors[0] if errors else None
        return pair
