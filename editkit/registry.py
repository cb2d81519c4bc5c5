"""One way to register an extension: ``Registry(kind)`` maps names to factories (classes or functions).

Declare an entry with the decorator ``@REGISTRY.register("name")``, or name it lazily where the registry is
created (``lazy={"name": "package.module:attribute"}``, or ``"package.module"`` for a module that registers itself
on import), so listing the choices or ``--help`` never imports heavy modules. ``get`` of an unknown name is a
:class:`~editkit.errors.UnknownName` that lists the choices.

A name containing ``:`` is a *dotted path* to an object outside the project (``"my_rewards:sharpness"``): ``get``
imports it, so a config can select a plugin without registering it first. A registry's optional ``check`` (what an
entry must be: a subclass of the interface, a callable taking the documented arguments) applies to built-ins and
dotted paths alike; a failing entry is a one-line :class:`~editkit.errors.ConfigError`. See docs/extending.md.
"""
from __future__ import annotations

import importlib
import inspect
from typing import Any, Callable, Generic, Iterator, Mapping, Optional, TypeVar, Union

from editkit.errors import ConfigError, UnknownName, UserError

T = TypeVar("T")
# ``check(entry)``: None when the entry fits the registry's interface, else what is missing (one line)
Check = Callable[[Any], Optional[str]]


def import_dotted(path: str, kind: str = "object") -> Any:
    """The object named by ``"package.module:Name"`` (``Name`` may be dotted: ``Class.factory``).

    A malformed path, a module that cannot be imported or a missing attribute is a one-line :class:`UnknownName`
    naming the path; an exception raised while the module runs is the module's own and keeps its traceback.
    """
    module_name, _, attribute = path.partition(":")
    if not module_name or not attribute:
        raise UnknownName(f"{kind} {path!r}: a dotted path is 'package.module:Name'")
    try:
        loaded = importlib.import_module(module_name)
    except ImportError as error:
        reason = " ".join(str(error).split())
        raise UnknownName(f"{kind} {path!r}: cannot import module {module_name!r} ({reason})") from None
    obj: Any = loaded
    for part in attribute.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise UnknownName(f"{kind} {path!r}: module {module_name!r} has no attribute {attribute!r}") from None
    return obj


def subclass_of(base: Union[type, str, Callable[[], type]]) -> Check:
    """A check: the entry is a class derived from ``base``: a class, a ``"package.module:Class"`` path or a function
    returning the class (the last two import the base only when an entry is checked)."""

    def check(entry: Any) -> Optional[str]:
        expected = base if isinstance(base, type) else import_dotted(base) if isinstance(base, str) else base()
        if not (isinstance(entry, type) and issubclass(entry, expected)):
            return f"must be a subclass of {expected.__module__}.{expected.__qualname__}, got {_describe(entry)}"
        return None

    return check


def callable_with(*arguments: str, keywords: bool = False) -> Check:
    """A check: the entry can be called as ``entry(<arguments>)`` positionally; with ``keywords``, every other
    parameter can be passed by keyword (the options of a factory)."""
    call = f"({', '.join(arguments)})"

    def check(entry: Any) -> Optional[str]:
        if not callable(entry):
            return f"must be callable as {call}, got {_describe(entry)}"
        try:
            signature = inspect.signature(entry)
        except (TypeError, ValueError):  # a builtin without a signature: nothing more to check
            return None
        try:
            signature.bind_partial(*arguments)
        except TypeError:
            return f"must be callable as {call}, but its signature is {signature}"
        required = [p for p in list(signature.parameters.values())[len(arguments):] if p.default is p.empty
                    and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
        if keywords:
            required = [p for p in required if p.kind is p.POSITIONAL_ONLY]
        if required:
            names = ", ".join(p.name for p in required)
            return f"must be callable as {call}, but its signature {signature} also requires {names}"
        return None

    return check


def has_methods(*names: str) -> Check:
    """A check: the entry (class or object) has every named method, e.g. ``__iter__`` and ``__len__``."""

    def check(entry: Any) -> Optional[str]:
        missing = [name for name in names if not callable(getattr(entry, name, None))]
        return f"lacks {', '.join(missing)} (needs {', '.join(names)})" if missing else None

    return check


def all_of(*checks: Check) -> Check:
    """A check passing when every one of ``checks`` passes (the first problem is reported)."""

    def check(entry: Any) -> Optional[str]:
        return next((problem for problem in (c(entry) for c in checks) if problem), None)

    return check


def _describe(entry: Any) -> str:
    if isinstance(entry, type) or callable(entry):
        return f"{getattr(entry, '__module__', '?')}.{getattr(entry, '__qualname__', repr(entry))}"
    return f"a {type(entry).__name__}"


class Registry(Generic[T]):
    def __init__(self, kind: str, lazy: Optional[Mapping[str, str]] = None, check: Optional[Check] = None):
        self.kind = kind
        self.check = check
        self._entries: dict[str, T] = {}
        self._lazy: dict[str, str] = dict(lazy or {})
        self._plugins: dict[str, T] = {}  # dotted paths already imported (not listed by names())
        self._checked: set[str] = set()

    def register(self, name: str, entry: Optional[T] = None):
        """``@registry.register("name")`` on a class or function, or ``registry.register("name", entry)``."""
        if entry is not None:
            self._entries[name] = entry
            self._lazy.pop(name, None)
            self._checked.discard(name)
            return entry

        def decorator(obj: T) -> T:
            return self.register(name, obj)

        return decorator

    def register_lazy(self, name: str, target: str) -> None:
        """``target``: ``"module:attribute"`` or a ``"module"`` that registers ``name`` when imported."""
        if name not in self._entries:
            self._lazy[name] = target

    def unregister(self, name: str) -> Optional[T]:
        """Remove an entry (or forget an imported dotted path)."""
        self._lazy.pop(name, None)
        self._checked.discard(name)
        plugin = self._plugins.pop(name, None)
        return self._entries.pop(name, plugin)

    def get(self, name: str) -> T:
        if name not in self._entries and name in self._lazy:
            self._load(name)
        if name in self._entries:
            entry = self._entries[name]
        elif isinstance(name, str) and ":" in name:
            if name not in self._plugins:
                self._plugins[name] = import_dotted(name, self.kind)
            entry = self._plugins[name]
        else:
            raise UnknownName(f"unknown {self.kind} {name!r}; choose one of: {', '.join(self.names())}")
        if self.check is not None and name not in self._checked:
            problem = self.check(entry)
            if problem:
                raise ConfigError(f"{self.kind} {name!r} {problem}")
            self._checked.add(name)
        return entry

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
        """A registered name, or a dotted path that imports and passes the check."""
        if name in self._entries or name in self._lazy:
            return True
        if isinstance(name, str) and ":" in name:
            try:
                self.get(name)
            except UserError:
                return False
            return True
        return False

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
