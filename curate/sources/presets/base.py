"""What every preset shares: opening the table, the ``limit``, image/mask cells, and edit-type mapping.

A preset subclasses :class:`TablePreset` and says which columns it needs and how one row becomes a
:class:`curate.sources.RawPair` (:meth:`TablePreset.pair`). Image cells may be encoded bytes, ``{"bytes", "path"}``
dicts, decoded PIL images (hub datasets) or paths; paths resolve against the dataset folder with containment
(:func:`editkit.safe_paths.resolve_inside`), so a dataset cannot make ingest read the user's other files.
"""
from __future__ import annotations

import io
import itertools
import re
from pathlib import Path
from typing import Any, Iterator, Mapping, Optional

from curate.sources import RawPair
from curate.sources.presets import PresetParams, masks, tables
from editkit import safe_paths, taxonomy

UNMAPPED_FLAG = "edit_type_unmapped"  # the dataset's type has no equivalent in editkit.taxonomy (edit_type None)
UNKNOWN_LICENCE = "unknown"


def licence_restrictions(licence: str) -> list[str]:
    """What a licence id forbids that a training set needs: ``non-commercial`` (CC ``NC``) and ``no-derivatives``
    (CC ``ND``); empty for permissive and unknown licences."""
    tokens = set(re.split(r"[\s_.\-]+", licence.strip().lower()))
    return [name for name, token in (("non-commercial", "nc"), ("no-derivatives", "nd")) if token in tokens]


class TablePreset:
    name = ""
    hub_id = ""  # the published dataset; the default path
    default_split: Optional[str] = "train"
    required: tuple[str, ...] = ()  # columns the preset cannot work without
    licence = UNKNOWN_LICENCE  # SPDX-like id of the dataset's licence as its card states it ("unknown": none stated)
    dataset = ""  # the public dataset's name for provenance ("": the hub id, else the preset name)

    def __init__(self, params: PresetParams):
        self.params = params
        self.path = params.path or self.hub_id
        self.origin = f"preset:{self.name}"
        self.table = self.open()
        self.check_columns(self.table.columns)

    # ------------------------------------------------------------ reading
    def open(self) -> tables.Table:
        return tables.open_table(self.path, self.params.split, self.default_split, self.params.streaming)

    def check_columns(self, columns: list[str]) -> None:
        missing = [c for c in self.required if c not in columns]
        if columns and missing:
            raise ValueError(f"ingest.preset.path: {self.path} is not {self.name}: missing column(s) "
                             f"{', '.join(missing)}; expected {', '.join(self.required)}, found {', '.join(columns)}")

    @property
    def root(self) -> Optional[Path]:
        return self.table.root

    def __len__(self) -> int:
        total = len(self.table)  # TypeError when streaming: the length is unknown
        return total if self.params.limit is None else min(total, self.params.limit)

    def __iter__(self) -> Iterator[RawPair]:
        pairs = map(self.provenance, self.pairs())
        yield from pairs if self.params.limit is None else itertools.islice(pairs, self.params.limit)

    def provenance(self, pair: RawPair) -> RawPair:
        """Where the pair came from, in its meta: the public dataset, the split read, the licence and what the
        licence forbids (``licence_restrictions``: ``non-commercial`` / ``no-derivatives``)."""
        pair.meta.setdefault("dataset", self.dataset or self.hub_id or self.name)
        split = self.table.split if self.table.split is not None else self.params.split
        if split is not None:
            pair.meta.setdefault("split", split)
        pair.meta["licence"] = self.licence
        pair.meta["licence_restrictions"] = licence_restrictions(self.licence)
        return pair

    def read_mask(self, pair: RawPair, cell: Any, errors: list[str], encoding: masks.Encoding = "auto") -> None:
        """A mask cell read at the source's resolution into ``pair.gt_mask`` (with its flags), or an error."""
        if cell is None or errors:
            return
        data = self.image(cell, "mask", errors)
        if data is None:
            return
        try:
            masks.read_mask(data, pair.source, encoding).apply(pair)
        except masks.MaskProblem as problem:
            errors.append(str(problem))
        except masks.SourceUnreadable:  # ingest rejects the pair for its source; the mask is not read
            pass

    def pairs(self) -> Iterator[RawPair]:
        for index, row in enumerate(self.table):
            if "__error__" in row:
                yield RawPair(self.origin, f"row {index}", None, None, None, error=f"malformed row: {row['__error__']}")
                continue
            yield self.pair(row, index)

    def pair(self, row: dict[str, Any], index: int) -> RawPair:
        raise NotImplementedError

    # ------------------------------------------------------------ cells
    def image(self, cell: Any, role: str, errors: list[str]) -> Optional[bytes]:
        """An image cell -> encoded bytes (None + an error in ``errors`` when empty or unreadable)."""
        if cell is None:
            errors.append(f"missing {role} image: empty cell")
            return None
        if isinstance(cell, (bytes, bytearray)):
            return bytes(cell)
        if isinstance(cell, dict):
            if cell.get("bytes"):
                return bytes(cell["bytes"])
            cell = cell.get("path")
            if not cell:
                errors.append(f"missing {role} image: empty cell")
                return None
        if isinstance(cell, str):
            return self.read_path(cell, role, errors)
        if hasattr(cell, "save"):  # a decoded PIL image
            buffer = io.BytesIO()
            cell.save(buffer, format="PNG")
            return buffer.getvalue()
        errors.append(f"missing {role} image: unsupported cell type {type(cell).__name__}")
        return None

    def read_path(self, relative: str, role: str, errors: list[str], roots: Optional[list[Path]] = None) -> Optional[bytes]:
        """A path cell read under the dataset folder (the first of ``roots`` where it exists)."""
        if re.match(r"^[a-z]+://", relative):
            errors.append(f"missing {role} image: {relative} is a URL (download the images and give local paths)")
            return None
        if self.root is None:
            errors.append(f"missing {role} image: path {relative!r} in a hub dataset has no local folder")
            return None
        last: Exception | None = None
        for root in roots or [self.root]:
            try:
                return safe_paths.read_inside(root, relative, allow_outside=self.params.allow_outside_root)
            except FileNotFoundError as error:
                last = error
            except safe_paths.UnsafePath as error:
                errors.append(f"unsafe {role} path: {error}")
                return None
        errors.append(f"missing {role} image: {relative} not found under {self.root}" if last else f"missing {role} image")
        return None


class RowPreset(TablePreset):
    """A table whose rows are plain pairs with no id column (``origin_key`` is the row number): one instruction
    column (a string or a list of them), a source and an edited image column, and columns kept in ``meta``."""

    instruction_column = ""
    source_column = ""
    edited_column = ""
    meta_columns: tuple[str, ...] = ()

    def pair(self, row: dict[str, Any], index: int) -> RawPair:
        errors: list[str] = []
        meta = {"row": index, **{k: row[k] for k in self.meta_columns if k in row}}
        pair = RawPair(self.origin, f"row {index}", row.get(self.instruction_column),
                       self.image(row.get(self.source_column), "source", errors),
                       self.image(row.get(self.edited_column), "edited", errors),
                       instruction_variants=text_list(row.get(self.instruction_column)), meta=meta)
        pair.error = errors[0] if errors else None
        return pair


def text_list(value: Any) -> list[str]:
    """A cell holding one instruction or a list of them -> the non-empty strings, in order, without repeats."""
    values = value if isinstance(value, (list, tuple)) else [value]
    out: list[str] = []
    for item in values:
        if isinstance(item, str) and item.strip() and item not in out:
            out.append(item)
    return out


def normalized(name: str) -> str:
    """``"Color-Alter"``, ``"color alter"``, ``"coloralter"`` -> ``"coloralter"`` (tables are keyed this way)."""
    return re.sub(r"[^a-z0-9]", "", name.lower())


def map_edit_type(value: Any, table: Mapping[str, Optional[str]], pair: RawPair,
                  no_type: frozenset[str] = frozenset()) -> None:
    """Set ``pair.edit_type`` from the dataset's own type via ``table`` (keys :func:`normalized`).

    The dataset's name is kept in ``meta["dataset_edit_type"]``; a name with no equivalent (mapped to None, or not in
    the table) gives ``edit_type None`` and the :data:`UNMAPPED_FLAG` flag, never a rejection. Names in ``no_type``
    are not edit types at all (e.g. a subfolder name) and give None without a flag.
    """
    if value is None or (isinstance(value, str) and not value.strip()):
        return
    text = str(value)
    pair.meta["dataset_edit_type"] = text
    key = normalized(text)
    if key in no_type:
        return
    ours = table.get(key)
    if ours is None:
        pair.flags.append(UNMAPPED_FLAG)
        return
    assert ours in taxonomy.EDIT_TYPES, ours  # the tables are checked by the tests too
    pair.edit_type = ours


def table(entries: Mapping[str, Optional[str]]) -> dict[str, Optional[str]]:
    """A mapping table keyed by :func:`normalized` names."""
    return {normalized(k): v for k, v in entries.items()}
