"""Presets for published editing datasets: ``ingest.source: preset`` with ``ingest.preset: {name, path, ...}``.

Each preset module knows one dataset's published layout (columns, image and mask encoding, edit-type names, ids) so
the user maps nothing. A module registers its class in :data:`PRESETS` with ``@register_preset("name")`` (which
also sets the class's ``name``); the modules are lazy entries (:data:`MODULES`), imported only when their preset is
asked for (listing the choices imports nothing).
See docs/datasets.md for the table of presets and what each one reads.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Callable, Optional, TypeVar

from editkit.errors import ConfigError, UnknownName
from editkit.registry import Registry, all_of, callable_with, has_methods
from editkit.config_meta import Range, check_fields

T = TypeVar("T")

# name -> module that registers it on import (one line per preset, kept sorted)
MODULES = {
    "anyedit": "curate.sources.presets.anyedit",
    "cocoedit_40k": "curate.sources.presets.cocoedit_40k",
    "gpt_image_edit": "curate.sources.presets.gpt_image_edit",
    "hq_edit": "curate.sources.presets.hq_edit",
    "imgedit": "curate.sources.presets.imgedit",
    "instructpix2pix": "curate.sources.presets.instructpix2pix",
    "inter_edit": "curate.sources.presets.inter_edit",
    "magicbrush": "curate.sources.presets.magicbrush",
    "omniedit": "curate.sources.presets.omniedit",
    "pico_banana": "curate.sources.presets.pico_banana",
    "ultraedit": "curate.sources.presets.ultraedit",
}

# a preset is a source class opened as ``Preset(preset_params)``
PRESETS: Registry[type] = Registry("preset", lazy=MODULES, check=all_of(
    callable_with("preset_params"), has_methods("__len__", "__iter__")))


@dataclass
class PresetParams:
    """``ingest.preset`` in params.yaml."""

    name: str = ""
    """the preset: magicbrush, ultraedit, omniedit, instructpix2pix, hq_edit, inter_edit, ... (docs/datasets.md)"""
    path: str = ""
    """hub id or local path (a folder, or one parquet/jsonl file); "" = the preset's hub id"""
    split: Optional[str] = None
    """the split to read (null: the preset's default split)"""
    streaming: bool = False
    """iterate without downloading/converting the whole dataset first"""
    limit: Annotated[Optional[int], Range(ge=0)] = None
    """take the first N pairs only"""
    allow_outside_root: bool = False
    """let path columns point outside the dataset folder"""

    def __post_init__(self) -> None:
        check_fields(self)


def register_preset(name: str) -> Callable[[T], T]:
    """Class decorator: make a preset class available under ``name``."""

    def decorator(cls: T) -> T:
        cls.name = name  # type: ignore[attr-defined]
        return PRESETS.register(name, cls)

    return decorator


def names() -> list[str]:
    return PRESETS.names()


def get_preset(name: str) -> type:
    """The preset class registered as ``name`` (its module imported on first use)."""
    try:
        return PRESETS.get(name)
    except UnknownName as error:
        raise ConfigError(f"ingest.preset.name: {error}") from None


def open_preset(params: PresetParams):
    """The configured preset as a source (iteration over :class:`curate.sources.RawPair`)."""
    if not params.name:
        raise ConfigError(f"ingest.preset.name is empty; choose one of: {', '.join(names())}")
    return get_preset(params.name)(params)


def open_preset_source(ingest, params_path):
    """``ingest.source: preset``: the ``ingest.preset`` section."""
    return open_preset(ingest.preset)
