"""Readers for published datasets in their released layouts: ``ingest.source: preset`` with
``ingest.preset: {name: <preset>, path: <the unpacked release>}``.

A preset is a module here that registers a factory with :func:`register_preset`; the factory takes the
:class:`PresetParams` and returns a :class:`curate.sources.Source` (``len()`` + iteration over ``RawPair``).
Every path a release names is resolved with :func:`editkit.safe_paths.resolve_inside`, so it stays in the release.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Callable

PRESETS: dict[str, Callable[["PresetParams"], Any]] = {}
MODULES = ("cocoedit_40k",)  # preset modules, imported on first use (each registers itself)
MAX_FILE_BYTES = 256 * 1024 * 1024  # no single image or mask file of a release is read beyond this


@dataclass
class PresetParams:
    name: str = ""  # one of the registered presets, e.g. cocoedit_40k
    path: str = ""  # the unpacked release
    options: dict[str, Any] = field(default_factory=dict)  # preset-specific settings (see each module)


def register_preset(name: str):
    def wrap(factory):
        PRESETS[name] = factory
        return factory

    return wrap


def known_presets() -> list[str]:
    for module in MODULES:
        importlib.import_module(f"curate.sources.presets.{module}")
    return sorted(PRESETS)


def open_preset(params: PresetParams):
    names = known_presets()
    if params.name not in PRESETS:
        raise ValueError(f"ingest.preset.name must be one of {names}, got {params.name!r}")
    if not params.path:
        raise ValueError(f"ingest.preset.path is empty: point it at the unpacked {params.name} release")
    return PRESETS[params.name](params)
