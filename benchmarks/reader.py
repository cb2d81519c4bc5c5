"""The benchmark reader interface: one module per benchmark (``benchmarks.gedit``, ``benchmarks.imgedit``,
``benchmarks.compbench``), each exposing ``read(path, params)``, the entry of :data:`benchmarks.build.READERS`.

``read(path, params)`` yields ``(item, edit_type)`` for every item of a local copy of the release at ``path``
(``params``: the ``bench`` section, :class:`benchmarks.build.BenchParams`): a :class:`benchmarks.items.BenchItem`
(an unreadable one carries its ``error`` instead of failing the build) and its :mod:`editkit.taxonomy` edit type,
or None when the benchmark's category has no counterpart. :func:`reader_check` is the registry's check, so a
dotted-path plugin reader (``"my_bench:read"``) is held to the same interface as the built-ins.
"""
from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any, Iterator, Optional, Protocol, runtime_checkable

from benchmarks.items import BenchItem
from editkit.registry import callable_with


@runtime_checkable
class BenchmarkReader(Protocol):
    """What the build calls: ``reader(path, params) -> Iterator[(BenchItem, edit type or None)]``."""

    def __call__(self, path: Path | str, params: Any) -> Iterator[tuple[BenchItem, Optional[str]]]: ...


# the positional arguments the build passes, read off the interface (so the check follows it)
READ_ARGUMENTS = tuple(name for name in inspect.signature(BenchmarkReader.__call__).parameters if name != "self")


def reader_check(entry: Any) -> Optional[str]:
    """The :data:`benchmarks.build.READERS` check: ``entry`` fits :class:`BenchmarkReader` (None), else why not."""
    return callable_with(*READ_ARGUMENTS)(entry)
