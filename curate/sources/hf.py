"""A Hugging Face dataset of edit pairs: a hub id, a ``save_to_disk`` folder, or a local data folder/file.

Column names are mapped in ``params.yaml`` (``ingest.hf``). Image columns may be ``datasets.Image`` features, raw
bytes, ``{"bytes", "path"}`` dicts or file paths; they are read as encoded bytes (never decoded here) so that
:mod:`curate.images` validates every source the same way.
"""
from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional

from curate.sources import RawPair


@dataclass
class HFParams:
    path: str = ""  # hub id ("org/name") or a local path
    split: str = "train"
    source_column: str = "source_image"
    edited_column: str = "edited_image"
    instruction_column: str = "instruction"
    id_column: Optional[str] = None
    mask_column: Optional[str] = None  # mask image, white = change
    edit_type_column: Optional[str] = None


def load(params: HFParams):
    """The dataset split named by ``params`` (``load_from_disk`` for saved datasets, else ``load_dataset``)."""
    import datasets

    if not params.path:
        raise ValueError("ingest.hf.path is empty: set a hub id or a local dataset path")
    local = Path(params.path)
    if local.is_dir() and any((local / f).exists() for f in ("dataset_info.json", "state.json", "dataset_dict.json")):
        loaded = datasets.load_from_disk(str(local))
        if isinstance(loaded, datasets.DatasetDict):
            if params.split not in loaded:
                raise ValueError(f"ingest.hf.split: {params.split!r} not in {params.path}; "
                                 f"choose one of: {', '.join(sorted(loaded))}")
            loaded = loaded[params.split]
        return loaded
    try:
        return datasets.load_dataset(params.path, split=params.split)
    except Exception as error:  # hub unreachable, unknown id, bad split: say what was tried
        raise RuntimeError(f"could not load the Hugging Face dataset {params.path!r} (split {params.split!r}): "
                           f"{type(error).__name__}: {error}. Without internet, use a local path "
                           "(a save_to_disk folder or a folder of data files)") from error


class HFSource:
    def __init__(self, params: HFParams, dataset=None):
        import datasets

        self.params = params
        dataset = load(params) if dataset is None else dataset
        wanted = [params.source_column, params.edited_column, params.instruction_column,
                  params.id_column, params.mask_column, params.edit_type_column]
        keys = ("source_column", "edited_column", "instruction_column", "id_column", "mask_column", "edit_type_column")
        missing = [f"ingest.hf.{key}: {column!r}" for key, column in zip(keys, wanted)
                   if column and column not in dataset.column_names]
        if missing:
            raise ValueError(f"column(s) not in the dataset: {'; '.join(missing)}; "
                             f"choose from: {', '.join(dataset.column_names)}")
        for column in (params.source_column, params.edited_column, params.mask_column):
            if column and isinstance(dataset.features[column], datasets.Image):
                dataset = dataset.cast_column(column, datasets.Image(decode=False))  # keep the encoded bytes
        self.dataset = dataset
        self.origin = f"hf:{Path(params.path).name if Path(params.path).exists() else params.path}"

    def __len__(self) -> int:
        return len(self.dataset)

    def __iter__(self) -> Iterator[RawPair]:
        p = self.params
        for index, row in enumerate(self.dataset):
            key = str(row[p.id_column]) if p.id_column and row.get(p.id_column) is not None else f"row {index}"
            errors: list[str] = []
            pair = RawPair(
                self.origin, key, row.get(p.instruction_column),
                _bytes(row.get(p.source_column), "source", errors), _bytes(row.get(p.edited_column), "edited", errors),
                edit_type=row.get(p.edit_type_column) if p.edit_type_column else None, meta={"row": index},
            )
            if p.mask_column and row.get(p.mask_column) is not None:
                pair.gt_mask = _bytes(row[p.mask_column], "mask", errors)
            pair.error = errors[0] if errors else None
            yield pair


def _bytes(value: Any, role: str, errors: list[str]) -> bytes | None:
    """An image cell -> encoded bytes (None + an error when it is empty or unreadable)."""
    if value is None:
        errors.append(f"missing {role} image: empty cell")
        return None
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    if isinstance(value, dict):
        if value.get("bytes"):
            return bytes(value["bytes"])
        value = value.get("path")
    if isinstance(value, str) and value:
        try:
            return Path(value).read_bytes()
        except OSError as error:
            errors.append(f"missing {role} image: {value}: {error.strerror or error}")
            return None
    if hasattr(value, "save"):  # a decoded PIL image (datasets with decode=True features)
        buffer = io.BytesIO()
        value.save(buffer, format="PNG")
        return buffer.getvalue()
    errors.append(f"missing {role} image: unsupported cell type {type(value).__name__}")
    return None


def open_hf(ingest: Any, params_path: Any) -> HFSource:
    """``ingest.source: hf``: the ``ingest.hf`` section."""
    return HFSource(ingest.hf)
