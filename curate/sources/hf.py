"""A Hugging Face dataset of edit pairs: a hub id, a ``save_to_disk`` folder, or a local data folder/file.

Column names are mapped in ``params.yaml`` (``ingest.hf``). Image columns may be ``datasets.Image`` features, raw
bytes, ``{"bytes", "path"}`` dicts or file paths; they are read as encoded bytes (never decoded here) so that
:mod:`curate.images` validates every source the same way. A file-path cell is data: it is read only when it stays
inside the local dataset folder (or, for a hub dataset, the ``datasets``/hub cache that holds its files), as a
regular, size-capped file (:mod:`editkit.safe_paths`); ``allow_outside_root: true`` lifts the folder check.
"""
from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Iterator, Optional

from curate.sources import RawPair
from editkit.safe_paths import UnsafePath, read_inside
from editkit.config_meta import Help


@dataclass
class HFParams:
    path: Annotated[str, Help("hub id (\"org/name\") or a local path")] = ""
    split: Annotated[str, Help("the dataset split to read")] = "train"
    source_column: Annotated[str, Help("column holding the source image")] = "source_image"
    edited_column: Annotated[str, Help("column holding the edited image")] = "edited_image"
    instruction_column: Annotated[str, Help("column holding the edit instruction")] = "instruction"
    id_column: Annotated[
        Optional[str],
        Help("optional column kept as the record's origin_key (null: the row index)"),
    ] = None
    mask_column: Annotated[Optional[str], Help("optional column with a mask image, white = change")] = None
    edit_type_column: Annotated[
        Optional[str],
        Help("optional column with the edit type (a name of editkit.taxonomy)"),
    ] = None
    allow_outside_root: Annotated[
        bool,
        Help("True: file-path cells may point anywhere (still regular files, size-capped)"),
    ] = False


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
        self.roots = _path_roots(params.path)

    def __len__(self) -> int:
        return len(self.dataset)

    def __iter__(self) -> Iterator[RawPair]:
        p = self.params
        for index, row in enumerate(self.dataset):
            key = str(row[p.id_column]) if p.id_column and row.get(p.id_column) is not None else f"row {index}"
            errors: list[str] = []
            pair = RawPair(
                self.origin, key, row.get(p.instruction_column),
                self._bytes(row.get(p.source_column), "source", errors),
                self._bytes(row.get(p.edited_column), "edited", errors),
                edit_type=row.get(p.edit_type_column) if p.edit_type_column else None, meta={"row": index},
            )
            if p.mask_column and row.get(p.mask_column) is not None:
                pair.gt_mask = self._bytes(row[p.mask_column], "mask", errors)
            pair.error = errors[0] if errors else None
            yield pair


    def _bytes(self, value: Any, role: str, errors: list[str]) -> bytes | None:
        return _bytes(value, role, errors, self.roots, self.params.allow_outside_root)


def _path_roots(path: str) -> list[Path]:
    """Where file-path cells may point: the local dataset folder, else the caches a hub dataset's files live in."""
    local = Path(path)
    if local.exists():
        return [local if local.is_dir() else local.parent]
    import datasets
    import huggingface_hub.constants

    return [Path(datasets.config.HF_DATASETS_CACHE), Path(huggingface_hub.constants.HF_HUB_CACHE)]


def _read_contained(value: str, roots: list[Path], allow_outside: bool) -> bytes:
    refused: UnsafePath | None = None
    for root in roots:
        try:
            return read_inside(root, value, allow_outside=allow_outside)
        except UnsafePath as error:
            refused = refused or error
    raise refused or UnsafePath(value, "no dataset root to read it from")


def _bytes(value: Any, role: str, errors: list[str], roots: list[Path], allow_outside: bool = False) -> bytes | None:
    """An image cell -> encoded bytes (None + an error when it is empty, unreadable or outside the dataset)."""
    if value is None:
        errors.append(f"missing {role} image: empty cell")
        return None
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    if isinstance(value, dict):
        data = value.get("bytes")
        if isinstance(data, (bytes, bytearray, memoryview)) and data:
            return bytes(data)
        if data:  # bytes(<int>) would allocate that many zeros, bytes(<str>) raises: neither is an image
            errors.append(f"missing {role} image: unsupported 'bytes' in the cell ({type(data).__name__})")
            return None
        value = value.get("path")
    if isinstance(value, str) and value:
        try:
            return _read_contained(value, roots, allow_outside)
        except UnsafePath as refused:
            errors.append(f"unsafe {role} path: {refused}")
            return None
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
