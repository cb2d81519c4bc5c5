'''Field metadata for config dataclasses: help text in an attribute docstring, numeric ranges in ``Annotated``.

A field reads::

    rank: Annotated[int, Range(gt=0)] = 32
    """LoRA rank of each adapted layer"""

The string right under a field is its help (the convention Sphinx, mkdocstrings and pydantic's
``use_attribute_docstrings`` read, so an editor shows it on hover). The loader (:mod:`editkit.config`) checks the
value against the ``Range`` when it loads a file, ``editkit config explain`` prints the help, and the generated
reference (``docs/config-reference.md``) lists both. Fixed string choices are ``Literal[...]``; the loader checks them
and the reference lists them.

A ``Range`` bounds a number, each number of a list or tuple (``resolution``) and each value of a mapping; a
float must be finite unless the range says ``allow_nan``/``allow_inf``. ``None`` (an optional field that is off)
is never checked.
'''
from __future__ import annotations

import ast
import dataclasses
import functools
import inspect
import math
import textwrap
import typing
from dataclasses import dataclass
from typing import Annotated, Any, Optional

__all__ = ["FieldInfo", "Range", "check_fields", "describe_type", "field_infos", "field_docs", "help_of",
           "range_of", "strip"]


@dataclass(frozen=True)
class Range:
    """Bounds of a numeric field: ``gt``/``ge`` below, ``lt``/``le`` above; NaN and ±inf refused unless allowed."""

    gt: Optional[float] = None
    ge: Optional[float] = None
    lt: Optional[float] = None
    le: Optional[float] = None
    allow_nan: bool = False
    allow_inf: bool = False

    def describe(self) -> str:
        """``> 0``, ``>= 0, <= 1``, ... (empty: any finite number)."""
        parts = [f"{op} {_number(bound)}" for op, bound in ((">", self.gt), (">=", self.ge), ("<", self.lt),
                                                                ("<=", self.le)) if bound is not None]
        return ", ".join(parts)

    def problem(self, value: Any) -> str | None:
        """Why ``value`` is out of range (``must be > 0, got -4``), or None when it is in range or not a number."""
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return None
        if isinstance(value, float):
            if math.isnan(value):
                return None if self.allow_nan else f"must be {self.describe() or 'a finite number'}, got nan"
            if math.isinf(value) and not self.allow_inf:
                return f"must be {self.describe() or 'a finite number'}, got {value}"
        for _op, bound, ok in ((">", self.gt, lambda v, b: v > b), (">=", self.ge, lambda v, b: v >= b),
                              ("<", self.lt, lambda v, b: v < b), ("<=", self.le, lambda v, b: v <= b)):
            if bound is not None and not ok(value, bound):
                return f"must be {self.describe()}, got {_number(value)}"
        return None


FINITE = Range()  # what a float field without a Range is held to


def check_fields(instance: Any) -> None:
    """Check the ranges and ``Literal`` choices of a dataclass built in code (``__post_init__``); the loader checks
    them already when it builds one from a file. Raises ValueError naming the field."""
    hints = _hints(type(instance))
    for f in dataclasses.fields(instance):
        hint = hints.get(f.name, Any)
        value = getattr(instance, f.name)
        problem = _problem(value, hint, range_of(hint))
        if problem:
            raise ValueError(f"{f.name}: {problem}")


@functools.lru_cache(maxsize=None)
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls, include_extras=True)


def _problem(value: Any, hint: Any, bounds: Range | None) -> str | None:
    hint = strip(hint)[0]
    if value is None:
        return None
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Literal:
        return None if value in args else f"expected one of {list(args)}, got {value!r}"
    if origin is typing.Union or (origin is not None and getattr(origin, "__name__", "") == "UnionType"):
        options = [a for a in args if a is not type(None)]
        literal = [a for a in options if typing.get_origin(strip(a)[0]) is typing.Literal]
        if len(options) == 1:
            return _problem(value, options[0], range_of(options[0]) or bounds)
        if literal and len(literal) == len(options):
            choices = [c for a in literal for c in typing.get_args(strip(a)[0])]
            return None if value in choices else f"expected one of {choices}, got {value!r}"
    if isinstance(value, (list, tuple)):
        item = args[0] if args and origin is not tuple else Any
        return next((p for p in (_problem(v, item, range_of(item) or bounds) for v in value) if p), None)
    if isinstance(value, dict):
        item = args[1] if len(args) == 2 else Any
        return next((p for p in (_problem(v, item, range_of(item) or bounds) for v in value.values()) if p), None)
    if isinstance(value, float) and bounds is None:
        bounds = FINITE
    return bounds.problem(value) if bounds is not None else None


@dataclass
class FieldInfo:
    """One field of a config dataclass as the docs and ``editkit config explain`` show it."""

    name: str  # dotted key below the root (``optim.learning_rate``)
    type: str  # readable type (``float``, ``list[int]``, ``"ddp" | "fsdp2"``, ``section``)
    default: Any
    help: str
    range: str  # ``> 0`` etc., "" when the field has none
    section: bool  # a nested dataclass (its fields follow)
    owner: type  # the dataclass that declares the field
    field_name: str


def strip(hint: Any) -> tuple[Any, list[Any]]:
    """``Annotated[T, a, b]`` -> ``(T, [a, b])``; any other hint -> ``(hint, [])``."""
    if typing.get_origin(hint) is Annotated:
        return hint.__origin__, list(hint.__metadata__)
    return hint, []


def help_of(cls: type, name: str) -> str:
    """The help of field ``name`` of dataclass ``cls`` (its attribute docstring; "" when it has none)."""
    return field_docs(cls).get(name, "")


@functools.lru_cache(maxsize=None)
def field_docs(cls: type) -> dict[str, str]:
    """The attribute docstrings of a class and its bases: the string literal right under a field's line.

    The same convention Sphinx, mkdocstrings and pydantic's ``use_attribute_docstrings`` read, so an editor shows
    the help on hover. A class whose source cannot be read (built at run time) has none."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__[:-1]):
        try:
            source = textwrap.dedent(inspect.getsource(klass))
        except (OSError, TypeError):
            continue
        body = next((n.body for n in ast.parse(source).body if isinstance(n, ast.ClassDef)), [])
        for node, after in zip(body, body[1:]):
            if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and isinstance(after, ast.Expr) \
                    and isinstance(after.value, ast.Constant) and isinstance(after.value.value, str):
                docs[node.target.id] = " ".join(inspect.cleandoc(after.value.value).split())
    return docs


def range_of(hint: Any) -> Range | None:
    return next((m for m in strip(hint)[1] if isinstance(m, Range)), None)


def describe_type(hint: Any) -> str:
    """A readable type: ``int``, ``float | null``, ``list[int]``, ``"euler" | "dpm2"``, ``dict[str, float]``."""
    hint = strip(hint)[0]
    if hint is type(None):
        return "null"
    if hint is Any:
        return "any"
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Literal:
        return " | ".join(f'"{a}"' if isinstance(a, str) else str(a) for a in args)
    if origin is typing.Union or (origin is not None and getattr(origin, "__name__", "") == "UnionType"):
        return " | ".join(describe_type(a) for a in args)
    if dataclasses.is_dataclass(hint):
        return "section"
    if origin is not None:
        name = getattr(origin, "__name__", str(origin))
        if name == "Mapping":
            name = "dict"
        inner = ", ".join("..." if a is Ellipsis else describe_type(a) for a in args)
        return f"{name}[{inner}]" if args else name
    return getattr(hint, "__name__", str(hint))


def field_infos(cls: type, prefix: str = "", instance: Any = None) -> list[FieldInfo]:
    """Every field of dataclass ``cls``, nested sections depth-first (a section's row before its fields).

    ``instance`` gives the defaults shown (default: ``cls()`` where it can be built without arguments)."""
    hints = typing.get_type_hints(cls, include_extras=True)
    if instance is None:
        try:
            instance = cls()
        except TypeError:
            instance = None
    rows: list[FieldInfo] = []
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        hint = hints.get(f.name, Any)
        bare = strip(hint)[0]
        section = _section_class(bare)
        default = getattr(instance, f.name) if instance is not None else _default(f)
        rng = range_of(hint)
        is_float = _mentions(bare, float)
        limits = rng.describe() if rng else ""
        if is_float and not (rng and (rng.allow_nan or rng.allow_inf)):
            limits = f"{limits}, finite" if limits else "finite"
        key = f"{prefix}{f.name}"
        rows.append(FieldInfo(key, describe_type(hint), None if section else default, help_of(cls, f.name), limits,
                              section is not None, cls, f.name))
        if section is not None:
            sub = default if dataclasses.is_dataclass(default) else None
            rows.extend(field_infos(section, key + ".", sub))
    return rows


def _section_class(hint: Any) -> type | None:
    if dataclasses.is_dataclass(hint):
        return hint
    options = [strip(a)[0] for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) is not None and len(options) == 1 and dataclasses.is_dataclass(options[0]) \
            and typing.get_origin(hint) not in (list, tuple, dict):
        return options[0]
    return None


def _mentions(hint: Any, kind: type) -> bool:
    hint = strip(hint)[0]
    return hint is kind or any(_mentions(a, kind) for a in typing.get_args(hint) if a is not Ellipsis)


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return f.default_factory()  # type: ignore[misc]
    return "(required)"


def _number(value: float) -> str:
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(value) if isinstance(value, float) else str(value)
