"""The one typed config loader: ``params.yaml`` sections, trainer YAML files and option sets of extensions.

Every setting is a field of a dataclass; :func:`from_dict` builds one from a mapping and checks it against the
field types before anything heavy happens: unknown keys and wrong value types are :class:`ConfigError` naming the
file and the key (``params.yaml: ingest.folder.pth: unknown key; known: ...``). Supported field types: ``int``,
``float`` (an int is accepted as is), ``bool``, ``str``, ``Optional[...]``, ``Literal[...]``, ``list[...]``,
``tuple[...]``, ``dict[str, ...]``, ``Any`` and nested dataclasses. A nested section is always a dataclass field;
the keys given in the file replace those of the field's default (the rest keep it). An optional section
(``Optional[SomeParams]``) given as ``{}`` or ``null`` is off (``None``). An unknown key near a known one is
suggested (``... (did you mean learning_rate?)``).

Field metadata (:mod:`editkit.config_meta`): the help is the docstring under a field, and a range rides on
``Annotated``: ``Annotated[float, Range(gt=0)]`` is checked as a ``float`` and then against its range, each number
of a list, tuple or mapping value too; a float must be finite unless its range allows NaN/inf. Out of range is one
line naming the file and the key (``train.yaml: optim.learning_rate: must be > 0, <= 1, got nan``).
``editkit config explain`` and the generated ``docs/config-reference.md`` read the same metadata.

Command-line overrides ``key.sub=value`` (:func:`apply_overrides`) are parsed by the target field's type, so
``optim.learning_rate=1e-4`` is the float 1e-4 and ``logging.wandb=false`` the bool False. YAML is read with
YAML 1.2 float syntax (``1e-4`` is a float, not the string YAML 1.1 makes of it) by :mod:`editkit.yaml_io`, which
bounds alias expansion.
"""
from __future__ import annotations

import collections.abc
import dataclasses
import difflib
import inspect
import types
import typing
from pathlib import Path
from typing import Any, Callable, Iterable, Literal, TypeVar, Union

from editkit.config_meta import FINITE, Range, strip
from editkit.errors import ConfigError
from editkit.yaml_io import MAX_YAML_DEPTH, MAX_YAML_VALUES, parse_yaml

T = TypeVar("T")
DEFAULT_PARAMS = Path("params.yaml")
COMMAND_LINE = "command line"

__all__ = ["ConfigError", "DEFAULT_PARAMS", "MAX_YAML_DEPTH", "MAX_YAML_VALUES", "apply_overrides",
           "call_with_options", "check_options", "convert", "from_dict", "load_file", "load_section", "load_yaml",
           "parse_yaml", "read_params"]


def load_yaml(path: Path | str) -> dict[str, Any]:
    """A YAML file that holds a mapping (empty file: ``{}``)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} not found (run from the repository root or pass the file)")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as error:
        raise ConfigError(f"{path}: not UTF-8 text (byte {error.start})") from None
    values = parse_yaml(text, str(path))
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: expected a mapping of settings, got {_describe_value(values)}")
    return values


def read_params(path: Path | str = DEFAULT_PARAMS) -> dict[str, Any]:
    if not Path(path).exists():
        raise ConfigError(f"params file {path} not found (run from the repository root or pass --params)")
    return load_yaml(path)


def load_section(cls: type[T], section: str, path: Path | str = DEFAULT_PARAMS) -> T:
    """Top-level ``section`` of a params file as ``cls`` (a missing section: all defaults)."""
    return from_dict(cls, read_params(path).get(section), section, file=str(path))


def load_file(cls: type[T], path: Path | str | None, overrides: Iterable[str] = (), where: str = "") -> T:
    """A whole YAML file as ``cls`` (no file: the defaults), with ``key.sub=value`` overrides on top."""
    values = load_yaml(path) if path else {}
    values = apply_overrides(cls, values, list(overrides))
    return from_dict(cls, values, where, file=str(path) if path else COMMAND_LINE)


def from_dict(cls: type[T], values: Any, where: str = "", file: str | None = None, base: T | None = None) -> T:
    """Build dataclass ``cls`` from ``values`` (a mapping), checking every key and value type.

    ``where`` is the section's key path used in messages; ``file`` the file it came from; ``base`` an instance
    whose values stand for the keys ``values`` does not give (default: the field defaults)."""
    origin = f"{file}: " if file else ""
    if values is None:
        values = {}
    if not isinstance(values, dict):
        raise ConfigError(f"{origin}{where or cls.__name__}: expected a section (mapping), got "
                          f"{_describe_value(values)}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}  # type: ignore[arg-type]
    unknown = sorted(set(values) - set(fields), key=str)
    if unknown:
        keys = ", ".join(_join(where, str(k)) for k in unknown)
        hints = "".join(_did_you_mean(str(k), fields, named=len(unknown) > 1) for k in unknown)
        raise ConfigError(f"{origin}unknown key{'s' if len(unknown) > 1 else ''} {keys}; known: {sorted(fields)}"
                          f"{hints}")
    hints = _hints(cls)
    kwargs = {name: getattr(base, name) for name in fields} if base is not None else {}
    for name, value in values.items():
        default = getattr(base, name) if base is not None else _field_default(fields[name])
        kwargs[name] = convert(value, hints.get(name, Any), _join(where, name), file, default)
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (ValueError, TypeError) as error:  # the dataclass's own checks (__post_init__)
        raise ConfigError(f"{origin}{where or cls.__name__}: {error}") from None


def convert(value: Any, hint: Any, where: str, file: str | None = None, default: Any = None, *,
            bounds: Range | None = None) -> Any:
    """``value`` checked against type ``hint`` (nested dataclasses built from mappings); ConfigError otherwise.

    ``Annotated[T, Range(...)]`` is checked as ``T`` and then against the range (each number of a list,
    tuple or mapping value too); ``bounds`` is the range in force from an enclosing ``Annotated``. A float is
    finite unless its range allows NaN/inf."""
    if typing.get_origin(hint) is typing.Annotated:
        inner, metadata = strip(hint)
        found = next((m for m in metadata if isinstance(m, Range)), None)
        return convert(value, inner, where, file, default, bounds=found or bounds)
    if hint is Any or hint is object or isinstance(hint, (str, TypeVar)):
        return value
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Union or (hasattr(types, "UnionType") and origin is types.UnionType):
        return _convert_union(value, args, where, file, default, bounds)
    if origin is Literal:
        if any(value == choice and type(value) is type(choice) for choice in args):
            return value
        raise _type_error(where, file, f"one of {list(args)}", value)
    if dataclasses.is_dataclass(hint):
        if isinstance(value, hint):
            return value
        if isinstance(value, dict):
            base = default if isinstance(default, hint) else None
            return from_dict(hint, value, where, file, base=base)
        raise _type_error(where, file, f"a {hint.__name__} section (mapping)", value)
    container = origin or hint
    if container in (list, tuple, set, frozenset):
        return _convert_sequence(value, container, args, where, file, bounds)
    if container in (dict, typing.Mapping, collections.abc.Mapping):
        if not isinstance(value, dict):
            raise _type_error(where, file, "a mapping", value)
        key_type, value_type = args if len(args) == 2 else (Any, Any)
        return {convert(k, key_type, f"{where} key {k!r}", file):
                convert(v, value_type, _join(where, str(k)), file, bounds=bounds) for k, v in value.items()}
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return _in_range(value, bounds or FINITE, where, file)  # an int is a valid float and stays as written
        raise _type_error(where, file, "a number", value)
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return _in_range(value, bounds, where, file)
        raise _type_error(where, file, "an integer", value)
    if hint in (bool, str) or isinstance(hint, type):
        if isinstance(value, hint):
            return value
        raise _type_error(where, file, _describe_type(hint), value)
    return value  # a typing construct this loader does not check (e.g. Callable)


def _in_range(value: Any, bounds: Range | None, where: str, file: str | None) -> Any:
    problem = bounds.problem(value) if bounds is not None else None
    if problem:
        raise ConfigError(f"{file}: {where}: {problem}" if file else f"{where}: {problem}")
    return value


def _did_you_mean(key: str, known: Iterable[str], named: bool = False) -> str:
    """`` (did you mean learning_rate?)`` for a near miss (``named``: ``... learning_rate for learing_rate?``)."""
    close = difflib.get_close_matches(key, [str(k) for k in known], n=1)
    return f" (did you mean {close[0]}{f' for {key}' if named else ''}?)" if close else ""


def _convert_union(value: Any, args: tuple, where: str, file: str | None, default: Any,
                   bounds: Range | None = None) -> Any:
    options = [a for a in args if a is not type(None)]
    optional = len(options) < len(args)
    if value is None and optional:
        return None
    if optional and value == {} and len(options) == 1 and dataclasses.is_dataclass(options[0]):
        return None  # an optional section given as {} is off
    for option in options:
        try:
            return convert(value, option, where, file, default, bounds=bounds)
        except ConfigError as error:
            if len(options) == 1 or dataclasses.is_dataclass(option) and isinstance(value, dict):
                raise error  # the only candidate: its message is the precise one
    expected = " or ".join(_describe_type(a) for a in args)
    raise _type_error(where, file, expected, value)


def _convert_sequence(value: Any, container: type, args: tuple, where: str, file: str | None,
                      bounds: Range | None = None) -> Any:
    if not isinstance(value, (list, tuple)):
        raise _type_error(where, file, "a list", value)
    if container is tuple and args and args[-1] is not Ellipsis:
        if len(value) != len(args):
            raise _type_error(where, file, f"a list of {len(args)} values", value)
        return tuple(convert(v, a, f"{where}[{i}]", file, bounds=bounds) for i, (v, a) in enumerate(zip(value, args)))
    item = args[0] if args else Any
    items = [convert(v, item, f"{where}[{i}]", file, bounds=bounds) for i, v in enumerate(value)]
    return items if container is list else container(items)


def apply_overrides(cls: type, values: dict[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """Apply ``a.b.c=value`` overrides to the raw mapping ``values`` (in place); each value is parsed by the type
    of the field it sets (``1e-4`` for a float field is 1e-4; ``true``/``false`` for a bool; ``null``/``none`` for
    an optional one; YAML flow syntax for lists, mappings and sections)."""
    for override in overrides:
        if "=" not in override:
            raise ConfigError(f"override {override!r} must look like key.sub=value")
        key, text = (part.strip() for part in override.split("=", 1))
        parts = key.split(".")
        if not all(parts):
            raise ConfigError(f"override {override!r}: empty key part")
        hint = _path_type(cls, parts, override)
        node = values
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if node is None:
                node = {}
            if not isinstance(node, dict):
                raise ConfigError(f"override {override!r}: {part} is not a section")
        try:
            node[parts[-1]] = parse_value(text, hint)
        except ConfigError as error:
            raise ConfigError(f"{COMMAND_LINE}: override {key}={text}: {error}") from None
    return values


def parse_value(text: str, hint: Any) -> Any:
    """Command-line text -> a value of type ``hint`` (raises ConfigError when it is not one)."""
    hint = strip(hint)[0]
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Union or (hasattr(types, "UnionType") and origin is types.UnionType):
        if type(None) in args and text.lower() in ("null", "none", "~"):
            return None
        options = [a for a in args if a is not type(None)]
        for option in options:
            try:
                return parse_value(text, option)
            except ConfigError:
                continue
        raise ConfigError(f"expected {' or '.join(_describe_type(a) for a in args)}, got {text!r}")
    if hint is bool:
        lowered = text.lower()
        if lowered in ("true", "yes", "on", "1"):
            return True
        if lowered in ("false", "no", "off", "0"):
            return False
        raise ConfigError(f"expected true or false, got {text!r}")
    if hint in (int, float):
        try:
            number = int(text) if hint is int else float(text)
        except ValueError:
            raise ConfigError(f"expected {'an integer' if hint is int else 'a number'}, got {text!r}") from None
        return number
    if hint is str:
        quoted = len(text) >= 2 and text[0] == text[-1] and text[0] in "'\""
        return parse_yaml(text) if quoted else text
    if origin is Literal:
        for choice in args:
            if str(choice) == text or (isinstance(choice, str) and choice == parse_yaml(text)):
                return choice
        raise ConfigError(f"expected one of {list(args)}, got {text!r}")
    value = parse_yaml(text, "override value")  # lists, mappings, sections, Any: YAML flow syntax
    return convert(value, hint, "value") if hint is not Any else value


def _path_type(cls: type, parts: list[str], override: str) -> Any:
    """The type of the field ``parts`` names below dataclass ``cls`` (Any below an untyped mapping)."""
    hint: Any = cls
    for depth, part in enumerate(parts):
        hint = _section_type(hint)
        if dataclasses.is_dataclass(hint):
            hints = _hints(hint)
            names = [f.name for f in dataclasses.fields(hint) if f.init]
            if part not in names:
                where = ".".join(parts[: depth + 1])
                raise ConfigError(f"{COMMAND_LINE}: override {override!r}: unknown key {where}; known: {sorted(names)}"
                                  f"{_did_you_mean(part, names)}")
            hint = hints.get(part, Any)
        elif typing.get_origin(hint) in (dict, collections.abc.Mapping) or hint is dict:
            args = typing.get_args(hint)
            hint = args[1] if len(args) == 2 else Any
        else:
            return Any
    return hint


def _section_type(hint: Any) -> Any:
    """``Optional[Section]`` -> ``Section`` (what the next key of a path lives in)."""
    hint = strip(hint)[0]
    args = typing.get_args(hint)
    if typing.get_origin(hint) is Union or (hasattr(types, "UnionType") and typing.get_origin(hint) is types.UnionType):
        options = [a for a in args if a is not type(None)]
        if len(options) == 1:
            return strip(options[0])[0]
    return hint


def check_options(function: Callable[..., Any], options: Any, where: str, file: str | None = None) -> dict[str, Any]:
    """The keyword options of an extension's factory, checked against its annotated signature like a section."""
    origin = f"{file}: " if file else ""
    if options is None:
        options = {}
    if not isinstance(options, dict):
        raise ConfigError(f"{origin}{where}: expected a mapping of options, got {_describe_value(options)}")
    signature = inspect.signature(function)
    parameters = {name: p for name, p in signature.parameters.items()
                  if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    takes_any = any(p.kind is p.VAR_KEYWORD for p in signature.parameters.values())
    unknown = sorted(set(options) - set(parameters), key=str)
    if unknown and not takes_any:
        keys = ", ".join(_join(where, str(k)) for k in unknown)
        raise ConfigError(f"{origin}unknown option{'s' if len(unknown) > 1 else ''} {keys}; known: "
                          f"{sorted(parameters)}")
    try:
        hints = typing.get_type_hints(function, include_extras=True)
    except Exception:
        hints = {}
    converted = {}
    for name, value in options.items():
        parameter = parameters.get(name)
        default = None if parameter is None or parameter.default is parameter.empty else parameter.default
        converted[name] = convert(value, hints.get(name, Any), _join(where, name), file, default)
    return converted


def call_with_options(function: Callable[..., T], options: Any, where: str, file: str | None = None) -> T:
    return function(**check_options(function, options, where, file))


def _hints(cls: type) -> dict[str, Any]:
    try:
        return typing.get_type_hints(cls, include_extras=True)
    except Exception as error:  # an annotation that does not resolve is a bug in the dataclass, not the user's
        raise TypeError(f"cannot resolve the field types of {cls.__name__}: {error}") from error


def _field_default(field: dataclasses.Field) -> Any:
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return field.default_factory()  # type: ignore[misc]
    return None


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _type_error(where: str, file: str | None, expected: str, value: Any) -> ConfigError:
    origin = f"{file}: " if file else ""
    return ConfigError(f"{origin}{where}: expected {expected}, got {_describe_value(value)}")


def _describe_type(hint: Any) -> str:
    hint = strip(hint)[0]
    if hint is type(None):
        return "null"
    names = {int: "an integer", float: "a number", bool: "true/false", str: "a string", list: "a list",
             dict: "a mapping"}
    if hint in names:
        return names[hint]
    origin = typing.get_origin(hint)
    if origin in names:
        return names[origin]
    if dataclasses.is_dataclass(hint):
        return f"a {hint.__name__} section"
    return getattr(hint, "__name__", str(hint))


def _describe_value(value: Any, limit: int = 60) -> str:
    """``type repr`` cut to ``limit`` characters; never builds much more than that (the value may be huge)."""
    text = _short_repr(value, limit + 1)
    return f"{type(value).__name__} {text if len(text) <= limit else text[: limit - 3] + '...'}"


def _short_repr(value: Any, limit: int, depth: int = 0) -> str:
    """``repr(value)``, or a text longer than ``limit`` that starts like it: containers are walked only until
    ``limit`` characters are written, strings and numbers are cut before they are quoted."""
    if isinstance(value, (str, bytes)):
        return repr(value[:limit])
    if isinstance(value, bool) or value is None or isinstance(value, float):
        return repr(value)
    if isinstance(value, int):
        return repr(value) if value.bit_length() < 3 * limit else f"<an integer of {value.bit_length()} bits>"
    if isinstance(value, (dict, list, tuple, set, frozenset)):
        opening, closing = {dict: "{}", list: "[]", tuple: "()"}.get(type(value), "{}")
        if depth >= 8:
            return opening + "..." + closing
        parts, used = [], 1
        items = value.items() if isinstance(value, dict) else value
        for item in items:
            room = max(limit - used, 1)
            part = (f"{_short_repr(item[0], room, depth + 1)}: {_short_repr(item[1], room, depth + 1)}"
                    if isinstance(value, dict) else _short_repr(item, room, depth + 1))
            parts.append(part)
            used += len(part) + 2
            if used > limit:
                break
        return opening + ", ".join(parts) + closing
    text = repr(value)  # other objects come from code, not from a file
    return text[: limit + 1]
