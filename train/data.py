"""Training data: the exported edit dataset (a ``datasets.save_to_disk`` dir) as source image + instruction + mask.

Rows are split once, deterministically by seed, into a held-out evaluation set and the training set. The
:class:`GroupSampler` walks a seeded permutation of the training rows epoch by epoch; its position (epoch, offset)
is part of the checkpoint, so a resumed run sees exactly the prompts it would have seen.

Each iteration takes ``groups_per_step`` prompts and makes ``group_size`` samples of each: a flat list of slots
``[(row, group, member), ...]``; process ``k`` of ``n`` gets the k-th contiguous 1/n of the slots, so a group may span
processes (advantages are then normalised over gathered rewards).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from editkit import export_columns as columns

# provenance columns of the export (editkit.export_columns) carried into each Example, to trace a row back
PROVENANCE_COLUMNS = (columns.DATASET, columns.SPLIT, columns.ORIGIN_KEY, columns.MASK_SOURCE, columns.LICENCE)


@dataclass
class Example:
    row: int
    source: torch.Tensor  # (3, H, W) in [0, 1]
    edit_mask: torch.Tensor  # (H, W) bool, True = should change
    prompt: str
    edit_type: str
    target: torch.Tensor | None = None  # (3, H, W) the dataset's edited image (ground truth), if the column exists
    phrases: list[str] = field(default_factory=list)  # the edit's target phrases (e.g. "the red car"), may be empty
    provenance: dict[str, str | None] = field(default_factory=dict)  # dataset, split, origin_key, mask_source, licence


def dataset_columns(path: Path | str) -> list[str] | None:
    """The columns of a ``save_to_disk`` dataset from its metadata only (``dataset_info.json`` features; of the
    ``train`` split of a DatasetDict), without opening the data; None when there is no such metadata to read."""
    import json

    path = Path(path)
    splits = path / "dataset_dict.json"
    if splits.is_file():
        try:
            names = json.loads(splits.read_text(encoding="utf-8")).get("splits") or []
        except (OSError, ValueError, AttributeError):
            return None
        path = path / ("train" if "train" in names else (names[0] if names else "train"))
    try:
        features = json.loads((path / "dataset_info.json").read_text(encoding="utf-8")).get("features")
    except (OSError, ValueError, AttributeError):
        return None
    return list(features) if isinstance(features, dict) else None


class EditDataset:
    """Lazy access to the exported dataset, resized to the training resolution."""

    def __init__(self, config, seed: int):
        import datasets

        from editkit import schema_versions

        path = Path(config.dataset)
        if not path.exists():
            raise FileNotFoundError(f"training dataset {path} not found; build it with `editkit curate export` "
                                    "(or `dvc repro`) or point data.dataset at a `datasets.save_to_disk` dir")
        # a newer export than this code reads fails in one line; an older one's rows are migrated in example()
        self.export_version = schema_versions.export_version(path)
        self.table = datasets.load_from_disk(str(path))
        if isinstance(self.table, datasets.DatasetDict):
            self.table = self.table["train"]
        self.config = config
        self._filter()  # a bad data.resample is a config error, not an unreadable row
        self.height, self.width = (int(v) for v in config.resolution)
        needed = [config.source_column, config.mask_column]
        missing = [c for c in needed if c not in self.table.column_names]
        instruction = [c for c in config.instruction_columns if c in self.table.column_names]
        if missing or not instruction:
            raise ValueError(f"dataset {path} lacks column(s) {missing or config.instruction_columns}; "
                             f"has {self.table.column_names}")
        self.instruction_columns = instruction
        order = np.random.default_rng(seed).permutation(len(self.table))
        eval_size = min(config.eval_size, max(len(self.table) - 1, 0))
        self.eval_rows = sorted(int(i) for i in order[:eval_size])
        self.train_rows = [int(i) for i in order[eval_size:]]
        if not self.train_rows:
            raise ValueError(f"dataset {path} has no training rows left after holding out {eval_size}")

    def example(self, row: int) -> Example:
        from PIL import Image

        from editkit import rle, schema_versions

        try:
            record = self.table[row]
            version = getattr(self, "export_version", schema_versions.CURRENT["export"])
            if version < schema_versions.CURRENT["export"]:
                record = schema_versions.migrate("export", record, version)
            image = record[self.config.source_column]
            if image is None:
                raise ValueError("no source image")
            image = self._fit(image.convert("RGB"), self._filter())
        except Exception as error:  # corrupt bytes, unreadable file: the caller records and skips the row
            raise ValueError(f"dataset row {row}: cannot read the source image ({error})") from error
        source = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1).contiguous()
        mask_rle = record[self.config.mask_column]
        if not mask_rle or not mask_rle.get("counts"):
            raise ValueError(f"dataset row {row}: no edit mask (column {self.config.mask_column!r})")
        try:
            mask = rle.decode(mask_rle)
        except Exception as error:
            raise ValueError(f"dataset row {row}: undecodable mask RLE ({error})") from error
        mask = self._fit(Image.fromarray(mask.astype(np.uint8) * 255), Image.NEAREST)
        prompt = next((record[c] for c in self.instruction_columns if record.get(c)), None)
        if not prompt:
            raise ValueError(f"dataset row {row}: empty instruction in {self.instruction_columns}")
        edit_type = str(record.get(self.config.edit_type_column) or "unknown")
        target = self._image(record, self.config.target_column, row, required=False)
        phrases = [str(p) for p in (record.get(self.config.phrases_column) or []) if p]
        provenance = {name: record.get(name) for name in PROVENANCE_COLUMNS if name in record}
        return Example(row, source, torch.from_numpy(np.asarray(mask) > 127), prompt, edit_type, target, phrases,
                       provenance)

    def _filter(self):
        from PIL import Image

        filters = {"bicubic": Image.BICUBIC, "lanczos": Image.LANCZOS}
        if self.config.resample not in filters:
            raise ValueError(f"data.resample must be one of {sorted(filters)}, got {self.config.resample!r}")
        return filters[self.config.resample]

    def _fit(self, image, resample):
        """Resize to the training resolution; with ``center_crop`` first crop the centred square (CoCoEdit's
        ``(w − s)//2, (h − s)//2`` box, s = the short side), so images are not stretched."""
        if self.config.center_crop and image.width != image.height:
            side = min(image.width, image.height)
            left, top = (image.width - side) // 2, (image.height - side) // 2
            image = image.crop((left, top, left + side, top + side))
        return image.resize((self.width, self.height), resample)

    def _image(self, record: dict, column: str | None, row: int, required: bool) -> torch.Tensor | None:
        """An image column resized to the training resolution, (3, H, W) in [0, 1]; None if absent and optional."""

        if not column or column not in self.table.column_names or record.get(column) is None:
            if required:
                raise ValueError(f"dataset row {row}: no image in column {column!r}")
            return None
        try:
            image = self._fit(record[column].convert("RGB"), self._filter())
        except Exception as error:
            raise ValueError(f"dataset row {row}: cannot read the {column} image ({error})") from error
        return torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1).contiguous()


@dataclass
class Slot:
    row: int
    group: int  # global group id (unique over the run)
    index: int  # global slot index within the iteration (seeds the sample's noise)


class GroupSampler:
    """Deterministic, resumable order of prompt groups."""

    def __init__(self, rows: list[int], seed: int, epoch: int = 0, offset: int = 0):
        self.rows, self.seed = list(rows), seed
        self.epoch, self.offset = epoch, offset

    def _order(self) -> list[int]:
        permutation = np.random.default_rng([self.seed, self.epoch]).permutation(len(self.rows))
        return [self.rows[i] for i in permutation]

    def next_prompts(self, count: int) -> list[int]:
        taken: list[int] = []
        while len(taken) < count:
            order = self._order()
            take = order[self.offset : self.offset + count - len(taken)]
            taken += take
            self.offset += len(take)
            if self.offset >= len(order):
                self.epoch, self.offset = self.epoch + 1, 0
        return taken

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "offset": self.offset}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.offset = int(state["epoch"]), int(state["offset"])


def iteration_slots(rows: list[int], step: int, group_size: int, process_index: int, num_processes: int) -> list[Slot]:
    """This process's share of the iteration's ``len(rows) × group_size`` samples."""
    total = len(rows) * group_size
    if total % num_processes:
        raise ValueError(f"groups_per_step × group_size = {total} must be divisible by the {num_processes} processes")
    slots = [Slot(row, step * len(rows) + g, g * group_size + m) for g, row in enumerate(rows) for m in range(group_size)]
    share = total // num_processes
    return slots[process_index * share : (process_index + 1) * share]
