"""Where edit pairs come from: the built-in sample, a folder with ``pairs.jsonl``, a Hugging Face dataset, or a
preset for a published editing dataset (:mod:`curate.sources.presets`).

Every source yields :class:`RawPair` objects: raw, unvalidated bytes plus what the source knows (instruction, edit
type, a ground-truth mask). Validation and normalisation happen in one place, :mod:`curate.images`, called by the
``ingest`` stage, so every source gets the same policies and reject reasons.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Protocol

import numpy as np

from editkit.registry import Registry, all_of, callable_with, has_methods


@dataclass
class RawPair:
    origin: str  # "sample", "folder:<name>", "hf:<dataset>"
    origin_key: str  # the pair's key in its origin (line number + user id, row index, sample index)
    instruction: str | None
    source: bytes | None  # encoded image bytes as found (None: could not be read, see ``error``)
    edited: bytes | None
    edit_type: str | None = None
    target_phrases: list[str] = field(default_factory=list)
    gt_mask: np.ndarray | bytes | None = None  # bool HxW (sample) or encoded mask image (white = change)
    meta: dict[str, Any] = field(default_factory=dict)
    error: str | None = None  # a problem found while reading, "category: detail" (e.g. a missing file)
    instruction_variants: list[str] = field(default_factory=list)  # every instruction the dataset ships for the pair
    flags: list[str] = field(default_factory=list)  # non-fatal findings of the reader (e.g. an unmapped edit type)
    has_edited: bool = True  # False: a prompt set (source + instruction + mask, no edited image); gt_mask is final


class Source(Protocol):
    def __len__(self) -> int: ...

    def __iter__(self) -> Iterator[RawPair]: ...


def _check_source(entry: Any) -> str | None:
    """An opener ``open(ingest, params_path)``; a class opened that way must also implement :class:`Source`."""
    check = callable_with("ingest", "params_path")
    return all_of(check, has_methods("__len__", "__iter__"))(entry) if isinstance(entry, type) else check(entry)


# ingest.source -> ``open(ingest_params, params_path) -> Source`` (modules load on first lookup)
SOURCES: Registry[Callable[..., Source]] = Registry("pair source (ingest.source)", lazy={
    "sample": "curate.sources.sample:open_sample", "folder": "curate.sources.folder:open_folder",
    "hf": "curate.sources.hf:open_hf", "preset": "curate.sources.presets:open_preset_source"}, check=_check_source)
