"""Containment for paths that come from data (a pairs file, a dataset's path column, a benchmark's json).

A path written by someone else must not reach the user's other files: :func:`resolve_inside` resolves it (symlinks
included) and accepts it only when it stays under the dataset root, names a regular file (not ``/dev/zero``, a FIFO
or a directory) and is at most ``max_bytes`` long. :func:`read_inside` also reads it, re-checking the opened file,
so a file swapped or grown after the check is still refused. ``allow_outside=True`` lifts only the root check, for
users who mean it (``allow_outside_root: true`` in their config).
"""
from __future__ import annotations

import os
import stat
from pathlib import Path

DEFAULT_MAX_BYTES = 256 << 20  # 256 MiB: far above any real photo, far below what would exhaust memory


class UnsafePath(ValueError):
    """A data-supplied path that was refused; ``reason`` says why in a few words (it becomes a reject reason)."""

    def __init__(self, relative: object, reason: str):
        self.relative, self.reason = relative, reason
        super().__init__(f"{relative}: {reason}")


def resolve_inside(root: Path | str, relative: str | os.PathLike, *, allow_outside: bool = False,
                   max_bytes: int | None = DEFAULT_MAX_BYTES) -> Path:
    """The resolved path of ``relative`` under ``root``; raises :class:`UnsafePath` (or ``FileNotFoundError`` for a
    contained path that does not exist).

    Absolute paths and ``..`` are resolved like any other path and then must still be inside ``root``.
    """
    if not isinstance(relative, (str, os.PathLike)):
        raise UnsafePath(repr(relative), f"not a path ({type(relative).__name__})")
    text = os.fspath(relative)
    if not isinstance(text, str) or not text.strip():
        raise UnsafePath(relative, "empty path")
    if "\x00" in text:
        raise UnsafePath(repr(text), "path contains a NUL byte")
    base = Path(root).resolve()
    try:
        resolved = (base / text).resolve()
    except (OSError, RuntimeError, ValueError) as error:  # symlink loops, names the OS refuses
        raise UnsafePath(text, f"cannot resolve ({type(error).__name__})") from None
    if not allow_outside and not resolved.is_relative_to(base):
        raise UnsafePath(text, f"outside the dataset root {base} (set allow_outside_root: true to allow)")
    try:
        info = resolved.stat()
    except FileNotFoundError:
        raise FileNotFoundError(f"{text} not found") from None
    except OSError as error:
        raise UnsafePath(text, f"cannot stat: {error.strerror or error}") from None
    _check(text, info, max_bytes)
    return resolved


def read_inside(root: Path | str, relative: str | os.PathLike, *, allow_outside: bool = False,
                max_bytes: int | None = DEFAULT_MAX_BYTES) -> bytes:
    """:func:`resolve_inside`, then read the file, never more than ``max_bytes`` (checked again on the open file)."""
    path = resolve_inside(root, relative, allow_outside=allow_outside, max_bytes=max_bytes)
    # O_NONBLOCK: a path swapped for a FIFO since the check must not block open(); O_NOFOLLOW: nor become a link.
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(path, flags)
    except OSError as error:
        raise UnsafePath(os.fspath(relative), f"cannot open: {error.strerror or error}") from None
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(handle.fileno())
        _check(os.fspath(relative), info, max_bytes)
        # read(n) allocates n bytes up front: ask for the file's size (+1, to notice growth), never the whole cap
        limit = info.st_size + 1 if max_bytes is None else min(info.st_size, max_bytes) + 1
        data = handle.read(limit)
        if len(data) == limit and (max_bytes is None or len(data) <= max_bytes):  # it grew since: read the rest
            data += handle.read(-1 if max_bytes is None else max_bytes + 1 - len(data))
    if max_bytes is not None and len(data) > max_bytes:
        raise UnsafePath(os.fspath(relative), f"too large (over {max_bytes} bytes)")
    return data


def _check(text: str, info: os.stat_result, max_bytes: int | None) -> None:
    if not stat.S_ISREG(info.st_mode):
        raise UnsafePath(text, "not a regular file")
    if max_bytes is not None and info.st_size > max_bytes:
        raise UnsafePath(text, f"too large ({info.st_size} bytes > {max_bytes})")
