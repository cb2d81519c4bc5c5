"""The one YAML reader of the project: safe tags only, YAML 1.2 floats, and aliases bounded while the document is
composed, so a few hundred bytes of anchors ("billion laughs") cannot expand into gigabytes. Every YAML file the
packages read goes through :func:`parse_yaml` (directly or through :func:`editkit.config.load_yaml`)."""
from __future__ import annotations

import re
from typing import Any

import yaml

from editkit.errors import ConfigError

__all__ = ["MAX_YAML_DEPTH", "MAX_YAML_VALUES", "YAMLTooLarge", "parse_yaml"]


MAX_YAML_VALUES = 100_000  # values one YAML document may stand for once its aliases are expanded
MAX_YAML_DEPTH = 100  # nesting levels of one YAML document


class YAMLTooLarge(yaml.YAMLError):
    """A document past :data:`MAX_YAML_VALUES` or :data:`MAX_YAML_DEPTH`, or with a recursive alias."""


class _Loader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 floats (``1e-4`` and ``1E5`` are floats; YAML 1.1 wants ``1.0e-4``) and bounded
    aliases: while the document is composed (before anything is constructed or walked), each node's size with every
    alias expanded is counted; a document that would stand for more than ``MAX_YAML_VALUES`` values ("billion
    laughs"), nests deeper than ``MAX_YAML_DEPTH`` or holds a recursive alias is refused. Anchors, aliases and merge
    keys (``<<: *defaults``) within those bounds work as usual."""

    aliases = 0  # aliases met in the document (an empty document composes nothing)

    def compose_document(self) -> Any:
        self._sizes: dict[int, int] = {}  # id(node) -> its size, aliases expanded (nodes stay alive meanwhile)
        self._depth = 0
        self.aliases = 0
        try:
            return super().compose_document()
        finally:
            self._sizes = {}

    def compose_node(self, parent: Any, index: Any) -> Any:
        alias = self.check_event(yaml.AliasEvent)
        mark = self.peek_event().start_mark
        self._depth += 1
        try:
            if self._depth > MAX_YAML_DEPTH:
                raise YAMLTooLarge(f"nested deeper than {MAX_YAML_DEPTH} levels (line {mark.line + 1})")
            node = super().compose_node(parent, index)
        finally:
            self._depth -= 1
        size = self._sizes.get(id(node))
        if alias:
            self.aliases += 1
            if size is None:  # the anchored node is still being composed: it contains this alias
                raise YAMLTooLarge(f"a recursive alias (line {mark.line + 1})")
            return node
        if size is None:
            children = node.value if isinstance(node.value, list) else []
            size = 1 + sum(self._sizes[id(part)] for child in children
                           for part in (child if isinstance(child, tuple) else (child,)))
            if size > MAX_YAML_VALUES:
                raise YAMLTooLarge(f"its aliases expand to more than {MAX_YAML_VALUES} values (line {mark.line + 1})")
            self._sizes[id(node)] = size
        return node


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                  |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
                  |\.[0-9_]+(?:[eE][-+][0-9]+)?
                  |[-+]?\.(?:inf|Inf|INF)
                  |\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."))


def parse_yaml(text: str, source: str = "") -> Any:
    """The one YAML reader of editkit (safe tags only, YAML 1.2 floats, bounded aliases: :class:`_Loader`).

    The result is a tree: an alias becomes a copy of what it names, so changing one place changes only that place.
    Anything wrong with the text is a one-line :class:`ConfigError` that starts with ``source``."""
    where = source or "YAML"
    loader = None
    try:
        loader = _Loader(text)
        data = loader.get_single_data()
    except YAMLTooLarge as error:
        raise ConfigError(f"{where}: refused: {error}") from None
    except Exception as error:  # noqa: BLE001
        # Not only YAMLError: PyYAML's constructors fail with ValueError (a date 2024-13-45, an integer of 5000
        # digits), AttributeError (an empty !!timestamp) ...; whatever it is, the text is at fault.
        first = (str(error).strip().splitlines() or [type(error).__name__])[0]
        if isinstance(error, yaml.MarkedYAMLError) and (error.problem or error.context):
            mark = error.problem_mark or error.context_mark
            first = (error.problem or error.context) + (f" (line {mark.line + 1}, column {mark.column + 1})"
                                                        if mark is not None else "")
        raise ConfigError(f"{where}: not valid YAML: {first if len(first) <= 200 else first[:197] + '...'}") from None
    finally:
        if loader is not None:
            loader.dispose()
    return _unshare(data) if loader.aliases else data


def _unshare(value: Any) -> Any:
    """A copy of a loaded YAML tree in which no list or mapping appears twice (bounded by MAX_YAML_VALUES)."""
    if isinstance(value, dict):
        return {key: _unshare(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_unshare(item) for item in value]
    return value
