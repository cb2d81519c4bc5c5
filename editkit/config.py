"""Typed stage parameters from ``params.yaml`` (the file DVC tracks).

Each stage declares a dataclass; :func:`load_section` fills it from one top-level section and refuses unknown keys,
so a typo in params.yaml is an error, not a silently ignored knob.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")
DEFAULT_PARAMS = Path("params.yaml")


def read_params(path: Path | str = DEFAULT_PARAMS) -> dict[str, Any]:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"params file {path} not found (run from the repository root or pass --params)")
    return yaml.safe_load(path.read_text()) or {}


def from_dict(cls: type[T], values: dict[str, Any] | None, where: str = "") -> T:
    """Build dataclass ``cls`` from ``values``; nested dataclass fields are built recursively."""
    values = dict(values or {})
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = set(values) - set(fields)
    if unknown:
        raise ValueError(f"unknown key(s) {sorted(unknown)} in {where or cls.__name__}; known: {sorted(fields)}")
    kwargs = {}
    hints = _resolved_hints(cls)
    for name, value in values.items():
        hint = hints.get(name)
        if dataclasses.is_dataclass(hint) and isinstance(value, dict):
            value = from_dict(hint, value, f"{where}.{name}" if where else name)
        kwargs[name] = value
    return cls(**kwargs)


def load_section(cls: type[T], section: str, path: Path | str = DEFAULT_PARAMS) -> T:
    return from_dict(cls, read_params(path).get(section), section)


def _resolved_hints(cls: type) -> dict[str, Any]:
    import typing

    try:
        return typing.get_type_hints(cls)
    except Exception:  # forward refs that cannot resolve: fall back to no nesting
        return {}
