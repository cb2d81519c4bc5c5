"""Paths named by untrusted data (a dataset's metadata, a pairs file) must stay inside the dataset's folder.

:func:`resolve_inside` resolves ``relative`` against ``root`` (symlinks included) and refuses, with
:class:`UnsafePath`, absolute paths and ``..`` escapes unless ``allow_outside``, and files larger than ``max_bytes``.
"""
from __future__ import annotations

from pathlib import Path


class UnsafePath(ValueError):
    """A path that leaves its root, or names a file too large to read."""


def resolve_inside(root: str | Path, relative: str | Path, *, allow_outside: bool = False,
                   max_bytes: int | None = None) -> Path:
    """The resolved path of ``relative`` under ``root``; raises :class:`UnsafePath` if it escapes or is too big."""
    text = str(relative)
    if not text or "\x00" in text:
        raise UnsafePath(f"empty or invalid path {text!r}")
    base = Path(root).resolve()
    candidate = Path(text)
    if candidate.is_absolute() and not allow_outside:
        raise UnsafePath(f"absolute path {text!r} is not allowed (paths are relative to {base})")
    resolved = (base / candidate).resolve()
    if not allow_outside and resolved != base and base not in resolved.parents:
        raise UnsafePath(f"path {text!r} leaves {base}")
    if max_bytes is not None and resolved.is_file() and resolved.stat().st_size > max_bytes:
        raise UnsafePath(f"{text!r} is {resolved.stat().st_size} bytes, more than the {max_bytes}-byte limit")
    return resolved
