"""One way to register an extension: ``Registry(kind)`` maps names to factories (classes or functions).

Declare an entry with the decorator ``@REGISTRY.register("name")``, or name it lazily where the registry is
created (``lazy={"name": "package.module:attribute"}``, or ``"package.module"`` for a module that registers itself
on import), so listing the choices or ``--help`` never imports heavy modules. ``get`` of an unknown name is a
:class:`~editkit.errors.UnknownName` that lists the choices. See docs/extending.md.
"""
from __future__ import annotations

import importlib
from typing import Generic, Iterator, Mapping, Optional, TypeVar

from editkit.errors import UnknownName

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str, lazy: Optional[Mapping[str, str]] = None):
        self.kind = kind
        self._entries: dict[str, T] = {}
        self._lazy: dict[str, str] = dict(lazy or {})

    def register(self, name: str, entry: Optional[T] = None):
        """``@registry.register("name")`` on a class or function, or ``registry.register("name", entry)``."""
        if entry is not None:
            self._entries[name] = entry
            self._lazy.pop(name, None)
            return entry

        def decorator(obj: T) -> T:
            return self.register(name, obj)

        return decorator

    def register_lazy(self, name: str, target: str) -> None:
        """``target``: ``"module:attribute"`` or a ``"module"`` that registers ``name`` when imported."""
        if name not in self._entries:
            self._lazy[name] = target

    def unregister(self, name: str) -> Optional[T]:
        self._lazy.pop(name, None)
        return self._entries.pop(name, None)

    def get(self, name: str) -> T:
        if name not in self._entries and name in self._lazy:
            self._load(name)
        try:
            return self._entries[name]
        except KeyError:
            raise UnknownName(f"unknown {self.kind} {name!r}; choose one of: {', '.join(self.names())}") from None

    def _load(self, name: str) -> None:
        module, _, attribute = self._lazy[name].partition(":")
        loaded = importlib.import_module(module)
        if attribute:
            self._entries[name] = getattr(loaded, attribute)
        self._lazy.pop(name, None)

    def names(self) -> list[str]:
        return sorted({*self._entries, *self._lazy})

    def load_all(self) -> dict[str, T]:
        """Every entry, imported (for listing what each one is)."""
        return {name: self.get(name) for name in self.names()}

    def __contains__(self, name: object) -> bool:
        return name in self._entries or name in self._lazy

    def __getitem__(self, name: str) -> T:
        return self.get(name)

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self.names())

    def pop(self, name: str, *default: T) -> Optional[T]:
        """Remove an entry (tests that register a temporary one clean up with this)."""
        entry = self.unregister(name)
        return entry if entry is not None or not default else default[0]

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {self.names()})"
