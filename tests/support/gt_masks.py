"""The masks stage with an ingested sample's ground-truth masks standing in for derived ones."""
from __future__ import annotations

from pathlib import Path


def run_gt_masks(ingest_dir: Path, out: Path, mask_source: str = "gt") -> None:
    """Runs the ``masks`` stage over ``ingest_dir/records`` into ``out``: every usable record's mask is its
    ``gt_mask``, marked ``mask_source``."""
    from editkit import schema
    from editkit.pipeline import run_stage

    def gt_masks(records, _images):
        for record in records:
            if schema.is_ok(record):
                record["mask"], record["mask_source"] = record["gt_mask"], mask_source
        return records

    run_stage("masks", ingest_dir / "records", out, gt_masks, progress=False)
