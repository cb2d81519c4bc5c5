"""The ablation's data: the exported dataset shrunk to the miniature resolution and split once into train/held-out.

Images are area-downsampled (``Image.BOX``); the edit mask is downsampled so that a low-resolution pixel is in the
edit region when ANY of its full-resolution pixels is (a box-filtered mask > 0). That keeps the background honest:
outside the small mask, the small source and the small target are averages of exactly the same pixels.

Rows whose mask covers (almost) the whole image (global edits such as style transfer) have no background to
preserve, so the ablation leaves them out, and so are rows of edit types outside ``edit_types`` when it is set; each
one is listed with its reason in ``excluded.json`` (never silently dropped). The pretraining stage and every RL run
train on ``train/`` (pretraining) and ``rl/`` (RL, when ``rl`` > 0; else RL also trains on ``train/``); settings are
chosen on ``validation/`` (when ``validation`` > 0) and ``heldout/`` (the test rows) is read for the final table.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from typing import Annotated
from editkit.config_meta import Range


@dataclass
class AblationDataConfig:
    dataset: str = "data/export/dataset"
    """a `datasets.save_to_disk` dir from `editkit curate export`"""
    resolution: Annotated[int, Range(ge=8, le=4096)] = 32
    """square side of the miniature images (pixels)"""
    heldout: Annotated[int, Range(ge=1)] = 24
    """test rows held out from all training and tuning (chosen by seed), read for the final table"""
    validation: Annotated[int, Range(ge=0)] = 0
    """further held-out rows (the next ones of the same seeded order) on which settings are chosen and the curves
    drawn; never trained on"""
    rl: Annotated[int, Range(ge=0)] = 0
    """rows kept out of pretraining for RL (the next ones of the same order; 0 = RL on the pretraining rows): the
    base editor has not memorised them, as a real editor has not seen its RL prompts"""
    seed: Annotated[int, Range(ge=0)] = 0
    """seed of the held-out split"""
    max_mask_fraction: Annotated[float, Range(gt=0, le=1)] = 0.95
    """rows whose edit mask covers more are excluded (no background to keep)"""
    edit_types: list[str] = field(default_factory=list)
    """keep only these edit types ([] = all)"""
    limit: Annotated[int, Range(ge=0)] = 0
    """use only the first N usable rows (0 = all); for smoke runs"""

    def __post_init__(self) -> None:
        if 0 < self.limit <= self.heldout + self.validation + self.rl:
            raise ValueError(f"limit ({self.limit}) must exceed heldout + validation + rl "
                             f"({self.heldout + self.validation + self.rl}): no row would be left to pretrain on")


def small_image(image, size: int):
    """A PIL image, area-downsampled to (size, size) RGB."""
    from PIL import Image

    return image.convert("RGB").resize((size, size), Image.BOX)


def small_mask(mask: np.ndarray, size: int) -> np.ndarray:
    """(H, W) bool -> (size, size) bool: True where any covered full-resolution pixel is True."""
    from PIL import Image

    coverage = Image.fromarray(mask.astype(np.float32)).resize((size, size), Image.BOX)
    return np.asarray(coverage) > 0


def prepare_splits(config: AblationDataConfig, out_dir: Path) -> dict[str, Path]:
    """Write ``out_dir/train`` and ``out_dir/heldout`` (datasets at ``config.resolution``) and ``excluded.json``."""
    import datasets

    from editkit import rle
    from editkit.store import write_json

    source = Path(config.dataset)
    if not source.exists():
        raise FileNotFoundError(f"dataset {source} not found: build it with `dvc repro export` (or `make ablation`)")
    table = datasets.load_from_disk(str(source))
    if isinstance(table, datasets.DatasetDict):
        table = table["train"]
    rows, excluded = [], {}
    edit_types = table["edit_type"] if config.edit_types else None  # the column alone: no image decoding
    for index in range(len(table)):
        if config.limit and len(rows) >= config.limit:
            break
        try:
            if config.edit_types and str(edit_types[index]) not in config.edit_types:
                raise ValueError(f"edit type {edit_types[index]!r} is not in data.edit_types")
            record = table[index]  # decodes the images: a corrupt one raises here
            mask = rle.decode(record["mask"]).astype(bool)
            if record.get("edited_image") is None:
                raise ValueError("no ground-truth edited image")
            fraction = float(mask.mean())
            if fraction > config.max_mask_fraction:
                raise ValueError(f"edit mask covers {fraction:.0%} of the image (global edit: no background)")
            small = small_mask(mask, config.resolution)
            if not small.any():
                raise ValueError("edit mask vanishes at the miniature resolution")
            rows.append({"id": str(record.get("id", index)), "instruction": record["instruction"],
                         "instruction_refined": record.get("instruction_refined") or record["instruction"],
                         "edit_type": str(record.get("edit_type") or "unknown"),
                         "target_phrases": list(record.get("target_phrases") or []),
                         "source_image": small_image(record["source_image"], config.resolution),
                         "edited_image": small_image(record["edited_image"], config.resolution),
                         "mask": rle.encode(small)})
        except Exception as error:  # noqa: BLE001  (any unreadable row is recorded with its reason, not fatal)
            excluded[f"row {index}"] = f"{type(error).__name__}: {error}"
    reserved = config.heldout + config.validation + config.rl
    if len(rows) <= reserved:
        raise ValueError(f"only {len(rows)} usable rows in {source}; need more than data.heldout + data.validation"
                         f" + data.rl = {reserved}")
    order = [int(i) for i in np.random.default_rng(config.seed).permutation(len(rows))]
    held = set(order[: config.heldout])  # the same test rows whatever the other counts
    validation = set(order[config.heldout : config.heldout + config.validation])
    rl = set(order[config.heldout + config.validation : reserved])
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    splits = [("train", [r for i, r in enumerate(rows) if i not in held | validation | rl]),
              ("heldout", [r for i, r in enumerate(rows) if i in held])]
    if validation:
        splits.append(("validation", [r for i, r in enumerate(rows) if i in validation]))
    if rl:
        splits.append(("rl", [r for i, r in enumerate(rows) if i in rl]))
    for name, members in splits:
        paths[name] = out_dir / name
        datasets.Dataset.from_list(members).save_to_disk(str(paths[name]))
    write_json(out_dir / "excluded.json", excluded)
    return paths
