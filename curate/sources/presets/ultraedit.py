"""UltraEdit (``BleachNick/UltraEdit_500k`` free-form, ``BleachNick/UltraEdit_Region_Based_100k`` region-based).

Columns: ``idx``, ``edit_prompt``, ``source_image``, ``edited_image``, ``source_caption``, ``target_caption``, the CLIP /
DINOv2 / SSIM filter scores; region-based rows add ``edit_object`` (the target phrase) and ``mask_image`` (white =
edit). Splits ``FreeForm`` / ``RegionBase``: with no split given, the one split present is read. ``origin_key`` is
``idx``. No edit types are given. Licence CC-BY-4.0 (both dataset cards). The region-based hub files are
``data/RegionBase-NNNNN-of-00093.parquet``; its masks are read at the source's resolution (``mask_resized`` /
``mask size mismatch`` when their size differs).
"""
from __future__ import annotations

from curate.sources import RawPair
from curate.sources.presets import register_preset
from curate.sources.presets.base import TablePreset, text_list

SCORES = ("clip_sim_source", "clip_sim_target", "clip_sim_dir", "clip_sim_image", "dinov2_sim", "ssim")


@register_preset("ultraedit")
class UltraEdit(TablePreset):
    hub_id = "BleachNick/UltraEdit_500k"
    licence = "CC-BY-4.0"
    default_split = None  # FreeForm or RegionBase, whichever the copy has
    required = ("idx", "edit_prompt", "source_image", "edited_image")

    def open(self):
        from curate.sources.presets import tables

        split = self.params.split
        if split is None and not self.params.path:
            split = "FreeForm"  # the hub dataset has exactly this split
        return tables.open_table(self.path, split, None, self.params.streaming)

    def pair(self, row, index):
        errors: list[str] = []
        meta = {"row": index, **{k: row[k] for k in (*SCORES, "source_caption", "target_caption") if k in row}}
        pair = RawPair(self.origin, str(row["idx"]), row.get("edit_prompt"),
                       self.image(row.get("source_image"), "source", errors),
                       self.image(row.get("edited_image"), "edited", errors),
                       instruction_variants=text_list(row.get("edit_prompt")), meta=meta)
        if isinstance(row.get("edit_object"), str) and row["edit_object"].strip():
            pair.target_phrases = [row["edit_object"].strip()]
        self.read_mask(pair, row.get("mask_image"), errors, encoding="white")
        pair.error = errors[0] if errors else None
        return pair
