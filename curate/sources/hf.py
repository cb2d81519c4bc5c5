"""A Hugging Face dataset of edit pairs: a hub id, a ``save_to_disk`` folder, a local data folder or one data file.

Column names are mapped in ``params.yaml`` (``ingest.hf``). Where the rows come from is resolved and read by
:mod:`curate.sources.presets.tables`, the same reader the presets use, and always **streamed**:

* a local folder of data files (a clone of a hub repository) has its files and splits resolved by ``datasets``' own
  data-files machinery (the card's ``configs: data_files``, else its patterns: the split from the file-name prefix,
  sharded names with hashes such as ``data/train-00000-of-00002-<hash>.parquet``); the files are read in place, in
  batches (parquet: only the mapped columns), so nothing is converted or copied into the ``datasets`` cache;
* one ``.parquet`` / ``.jsonl`` / ``.jsonl.gz`` / ``.arrow`` / ``.json`` file is read the same way;
* a ``save_to_disk`` folder is memory-mapped (``load_from_disk``);
* a hub id is iterated with ``datasets.load_dataset(..., streaming=True)``: nothing is downloaded up front.

An instruction column may hold one text or a list of texts: every text becomes an instruction variant and the first
non-empty one is the instruction. Image columns may be ``datasets.Image`` features, raw bytes, ``{"bytes", "path"}``
dicts or file paths; they are read as encoded bytes (never decoded here) so that :mod:`curate.images` validates every
source the same way. A file-path cell is data: it is read only when it stays inside the local dataset folder (or, for
a hub dataset, the ``datasets``/hub cache that holds its files), as a regular, size-capped file
(:mod:`editkit.safe_paths`); ``allow_outside_root: true`` lifts the folder check. A mask column is read where its
paint is (:func:`curate.sources.presets.masks.read_mask`) at the source image's resolution.
"""
from __future__ import annotations

import io
import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Iterator, Literal, Optional

from curate.sources import RawPair
from curate.sources.presets import masks, tables
from curate.sources.presets.base import UNKNOWN_LICENCE, licence_restrictions, text_list
from editkit.config_meta import Range
from editkit.safe_paths import UnsafePath, read_inside


@dataclass
class HFParams:
    path: str = ""
    """hub id ("org/name") or a local path (a folder of data files, a save_to_disk folder, or one parquet/jsonl/arrow
    file)"""
    split: str = "train"
    """the dataset split to read (ignored for a single data file)"""
    source_column: str = "source_image"
    """column holding the source image"""
    edited_column: str = "edited_image"
    """column holding the edited image"""
    instruction_column: str = "instruction"
    """column holding the edit instruction, or a list of them (every one is kept as a variant)"""
    id_column: Optional[str] = None
    """optional column kept as the record's origin_key (null: the row index)"""
    mask_column: Optional[str] = None
    """optional column with the dataset's own mask image"""
    mask_encoding: Literal["auto", "white", "black", "alpha", "painted"] = "auto"
    """how the mask marks the edit: auto (transparent pixels if any, else white in a black/white image, else white paint
    over the photo), white, black, alpha (transparent = edit), painted"""
    edit_type_column: Optional[str] = None
    """optional column with the edit type (a name of editkit.taxonomy)"""
    licence: Optional[str] = None
    """the dataset's licence as an SPDX-like id (e.g. CC-BY-4.0), kept in every record's meta (null: unknown)"""
    limit: Annotated[Optional[int], Range(ge=0)] = None
    """take the first N rows only"""
    allow_outside_root: bool = False
    """True: file-path cells may point anywhere (still regular files, size-capped)"""


KEY = "ingest.hf"


def load(params: HFParams) -> tables.Table:
    """The rows of the split named by ``params``, streamed (see the module docstring)."""
    if not params.path:
        raise ValueError(f"{KEY}.path is empty: set a hub id or a local dataset path")
    local = Path(params.path).expanduser()
    if not local.exists() and (params.path.startswith((".", "/", "~")) or params.path.count("/") != 1):
        raise RuntimeError(f"could not load the Hugging Face dataset {params.path!r}: no such file or folder, and "
                           "not a hub id (org/name)")
    try:
        return tables.open_table(params.path, params.split, None, streaming=True, key=KEY)
    except RuntimeError as error:  # hub unreachable, unknown id: say what was tried
        raise RuntimeError(f"could not load the Hugging Face dataset {params.path!r} (split {params.split!r}): "
                           f"{error}. Without internet, use a local path (a folder of data files, a save_to_disk "
                           "folder or one data file)") from error


class HFSource:
    def __init__(self, params: HFParams, dataset=None):
        self.params = params
        if dataset is None:
            table = load(params)
        else:  # an already loaded dataset (datasets.Dataset, IterableDataset or any iterable of row dicts)
            dataset = tables._encoded_images(dataset) if hasattr(dataset, "cast_column") else dataset
            columns = list(getattr(dataset, "column_names", None) or (getattr(dataset, "features", None) or {}))
            length = len(dataset) if hasattr(dataset, "__len__") else None
            table = tables.Table(root=None, dataset=dataset, columns=columns, length=length)
        wanted = [params.source_column, params.edited_column, params.instruction_column,
                  params.id_column, params.mask_column, params.edit_type_column]
        keys = ("source_column", "edited_column", "instruction_column", "id_column", "mask_column", "edit_type_column")
        missing = [f"{KEY}.{key}: {column!r}" for key, column in zip(keys, wanted)
                   if column and table.columns and column not in table.columns]
        if missing:
            raise ValueError(f"column(s) not in the dataset: {'; '.join(missing)}; "
                             f"choose from: {', '.join(table.columns)}")
        table.read_columns = [c for c in wanted if c]  # parquet files read only the mapped columns
        self.table = table
        self.dataset = table.dataset
        self.origin = f"hf:{Path(params.path).name if Path(params.path).exists() else params.path}"
        self.roots = [table.root] if table.root is not None else _path_roots(params.path)
        self.licence = params.licence or UNKNOWN_LICENCE
        self.split = table.split if table.split is not None else (params.split if table.files == [] else None)
        self.provenance = {"dataset": self.origin.split(":", 1)[1], "licence": self.licence,
                           "licence_restrictions": licence_restrictions(self.licence),
                           **({"split": self.split} if self.split is not None else {})}

    def __len__(self) -> int:
        total = len(self.table)  # TypeError when streaming a hub dataset: the length is unknown
        return total if self.params.limit is None else min(total, self.params.limit)

    def __iter__(self) -> Iterator[RawPair]:
        rows = enumerate(self.table)
        if self.params.limit is not None:
            rows = itertools.islice(rows, self.params.limit)
        for index, row in rows:
            yield self.pair(row, index)

    def pair(self, row: dict[str, Any], index: int) -> RawPair:
        p = self.params
        if "__error__" in row:
            return RawPair(self.origin, f"row {index}", None, None, None, error=f"malformed row: {row['__error__']}")
        key = str(row[p.id_column]) if p.id_column and row.get(p.id_column) is not None else f"row {index}"
        instruction = row.get(p.instruction_column)
        variants = text_list(instruction)
        if isinstance(instruction, (list, tuple)):
            instruction = variants[0] if variants else None
        errors: list[str] = []
        meta: dict[str, Any] = {"row": index, **self.provenance}
        meta["licence_restrictions"] = list(meta["licence_restrictions"])  # each pair owns its meta
        pair = RawPair(
            self.origin, key, instruction,
            self._bytes(row.get(p.source_column), "source", errors),
            self._bytes(row.get(p.edited_column), "edited", errors),
            edit_type=row.get(p.edit_type_column) if p.edit_type_column else None, meta=meta,
            instruction_variants=variants,
        )
        if p.mask_column and row.get(p.mask_column) is not None and not errors:
            data = self._bytes(row[p.mask_column], "mask", errors)
            if data is not None:
                try:
                    masks.read_mask(data, pair.source, p.mask_encoding).apply(pair)
                except masks.MaskProblem as problem:
                    errors.append(str(problem))
                except masks.SourceUnreadable:  # ingest rejects the pair for its source image
                    pass
        pair.error = errors[0] if errors else None
        return pair

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
