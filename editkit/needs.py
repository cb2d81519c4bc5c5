"""Declared needs: what an extension reads, checked before it runs.

An extension (a reward factory, a filter, a stage's step) says which fields of its input it reads and which
capabilities of the run it relies on, with :func:`declare_needs` or a ``needs`` attribute::

    @REWARDS.register("sharpness")
    @declare_needs("source_image", "mask")
    def sharpness(): ...

    class MyStep:
        needs = Needs(fields=("mask", "scores"))

Whoever runs it compares the declaration with what the input holds (a training dataset's columns, a record shard's
columns) and fails at start with one line naming the extension and the missing field, instead of failing on the
first row that lacks it. Capabilities switch on work the run does for the extension (``attention_maps``: the
rollout records the target phrase's attention). Undeclared means *needs nothing extra*: only what every input has.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Optional, TypeVar

from editkit.errors import ConfigError

T = TypeVar("T")


@dataclass(frozen=True)
class Needs:
    """``fields``: input fields read (names of the input's vocabulary); ``capabilities``: what the run must provide."""

    fields: tuple[str, ...] = ()
    capabilities: tuple[str, ...] = ()

    def __or__(self, other: "Needs") -> "Needs":
        return Needs(tuple(dict.fromkeys(self.fields + other.fields)),
                     tuple(dict.fromkeys(self.capabilities + other.capabilities)))


NOTHING = Needs()


def declare_needs(*fields: str, capabilities: Iterable[str] = ()) -> Callable[[T], T]:
    """Decorator: ``obj.needs = Needs(fields, capabilities)`` (a function or a class)."""
    declared = Needs(tuple(fields), tuple(capabilities))

    def decorate(obj: T) -> T:
        obj.needs = declared  # type: ignore[attr-defined]
        return obj

    return decorate


def needs_of(obj: Any) -> Needs:
    """What ``obj`` declared: its ``needs`` attribute (a :class:`Needs`, or field names); none = :data:`NOTHING`."""
    declared = getattr(obj, "needs", None)
    if declared is None:
        return NOTHING
    if isinstance(declared, Needs):
        return declared
    if isinstance(declared, str):
        return Needs((declared,))
    return Needs(tuple(declared))


def needs_problem(obj: Any) -> Optional[str]:
    """A registry check (:mod:`editkit.registry`): a declared ``needs`` must be a :class:`Needs` or field names."""
    declared = getattr(obj, "needs", None)
    if declared is None or isinstance(declared, Needs):
        return None
    if isinstance(declared, (list, tuple, frozenset, set)) and all(isinstance(f, str) for f in declared):
        return None
    return f"declares needs={declared!r}: expected editkit.needs.Needs or a tuple of field names"


def require(owner: str, needs: Needs, available: Iterable[str], where: str) -> None:
    """Fail (one-line :class:`ConfigError`) when ``needs`` reads a field ``available`` lacks: ``owner needs field
    'mask', which <where> lacks``."""
    have = set(available)
    missing = [name for name in needs.fields if name not in have]
    if missing:
        raise ConfigError(f"{owner} needs field {missing[0]!r}, which {where} lacks (it has: "
                          f"{', '.join(sorted(have)) or 'nothing'})")


def shard_columns(directory: Path | str) -> Optional[list[str]]:
    """The top-level columns of the first record shard in ``directory`` (its Parquet footer only), or None when
    there is no shard to look at."""
    import pyarrow.parquet as pq

    from editkit import store

    shards = store.list_shards(directory)
    if not shards:
        return None
    return list(pq.read_schema(Path(directory) / f"{shards[0]}.parquet").names)
