"""Schema versions of the formats editkit writes, and the migrations that read older ones.

Three kinds of files carry a version (:data:`CURRENT`):

* ``records``: the record shards (``data/<stage>/records/shard-*.parquet``); the version is in the Parquet schema
  metadata (:data:`PARQUET_KEY`), one per shard, and a migration works on one record ``dict``.
* ``reviews``: a reviews file (``reviews/*.json``); the version is the document's ``schema_version`` key, and a
  migration works on the whole JSON document.
* ``export``: an exported ``datasets`` folder; the version is in a small JSON file beside the data
  (:data:`EXPORT_STAMP`), and a migration works on one row ``dict``.

A file written before versions existed has none: it reads as version 1. Reading a file of an older version applies
the registered migrations one version at a time (``migrate``); a version newer than this code knows (or one no
migration leads away from) fails with a one-line :class:`UnsupportedVersion` that names the version and the
supported ones, never a silent misread.

Adding a version: bump ``CURRENT[kind]`` and register the step from the previous version::

    @migration("reviews", 2)          # reads a version-2 object, returns it as version 3
    def _reviews_2_to_3(document): ...
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

from editkit.errors import UserError

CURRENT: dict[str, int] = {"records": 2, "reviews": 3, "export": 2}
VERSION_KEY = "schema_version"
PARQUET_KEY = b"editkit.schema_version"  # record shards: Parquet/Arrow schema metadata
EXPORT_STAMP = "editkit_format.json"  # beside dataset_info.json in an exported save_to_disk folder

Migration = Callable[[Any], Any]
_MIGRATIONS: dict[tuple[str, int], Migration] = {}


class UnsupportedVersion(UserError, ValueError):
    """A file whose schema version this code cannot read (newer than it knows, or not a version at all)."""


def migration(kind: str, from_version: int) -> Callable[[Migration], Migration]:
    """Register ``fn`` as the step that turns a ``kind`` object of ``from_version`` into ``from_version + 1``."""
    _known(kind)

    def register(fn: Migration) -> Migration:
        key = (kind, from_version)
        if key in _MIGRATIONS:
            raise ValueError(f"a {kind} migration from version {from_version} is already registered")
        _MIGRATIONS[key] = fn
        return fn

    return register


def supported(kind: str) -> list[int]:
    """The versions of ``kind`` that can be read: the current one and every one a chain of migrations leads from."""
    current = CURRENT[_known(kind)]
    versions = [current]
    version = current - 1
    while (kind, version) in _MIGRATIONS:
        versions.insert(0, version)
        version -= 1
    return versions


def check(kind: str, version: Any, where: str | Path = "") -> int:
    """``version`` as an int when it can be read, else :class:`UnsupportedVersion` naming it and the supported ones."""
    readable = supported(kind)
    number = version if isinstance(version, int) and not isinstance(version, bool) else None
    if number is None and isinstance(version, str) and version.isdigit():
        number = int(version)
    if number not in readable:
        place = f"{where}: " if str(where) else ""
        newer = " (written by a newer editkit: upgrade it to read this file)" if (
            number is not None and number > CURRENT[kind]) else ""
        raise UnsupportedVersion(f"{place}{kind} schema version {version!r} is not supported{newer}; this editkit "
                                 f"reads versions {', '.join(map(str, readable))}")
    return number


def version_of(obj: Any) -> int | Any:
    """The version an object carries (its ``schema_version`` key); 1 when it has none (written before versions)."""
    if isinstance(obj, dict) and VERSION_KEY in obj:
        return obj[VERSION_KEY]
    return 1


def migrate(kind: str, obj: Any, version: Any = None, where: str | Path = "") -> Any:
    """``obj`` (of ``version``; default: :func:`version_of`) brought to ``CURRENT[kind]`` by the registered steps.

    Objects that carry their own ``schema_version`` key come back stamped with the current one."""
    number = check(kind, version_of(obj) if version is None else version, where)
    while number < CURRENT[kind]:
        obj = _MIGRATIONS[(kind, number)](obj)
        number += 1
    if isinstance(obj, dict) and VERSION_KEY in obj:
        obj = {**obj, VERSION_KEY: CURRENT[kind]}
    return obj


def stamp(kind: str, obj: dict[str, Any]) -> dict[str, Any]:
    """A copy of the JSON document ``obj`` with the current ``schema_version`` of ``kind`` (written first)."""
    return {VERSION_KEY: CURRENT[_known(kind)], **{k: v for k, v in obj.items() if k != VERSION_KEY}}


def parquet_metadata(kind: str = "records") -> dict[bytes, bytes]:
    """The Arrow schema metadata that stamps a Parquet file with the current version of ``kind``."""
    return {PARQUET_KEY: str(CURRENT[_known(kind)]).encode()}


def parquet_version(metadata: dict[bytes, bytes] | None) -> int | str:
    """The version in Arrow schema metadata (1 when the file has none); not checked (see :func:`check`)."""
    raw = (metadata or {}).get(PARQUET_KEY)
    if raw is None:
        return 1
    text = raw.decode("utf-8", "replace")
    return int(text) if text.isdigit() else text


def write_export_stamp(directory: Path | str) -> Path:
    """Stamp an exported dataset folder with the current export version (a small JSON file beside its data)."""
    path = Path(directory) / EXPORT_STAMP
    path.write_text(json.dumps(stamp("export", {"format": "editkit export"}), sort_keys=True) + "\n")
    return path


def export_version(directory: Path | str) -> int:
    """The checked export version of a dataset folder: 1 when unstamped (older exports, or another tool's dataset)."""
    path = Path(directory) / EXPORT_STAMP
    if not path.is_file():
        return 1
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise UnsupportedVersion(f"{path}: unreadable export stamp ({error})") from None
    return check("export", version_of(document) if isinstance(document, dict) else document, path)


def _known(kind: str) -> str:
    if kind not in CURRENT:
        raise KeyError(f"unknown schema kind {kind!r}; known: {sorted(CURRENT)}")
    return kind


# ---------------------------------------------------------------- migrations
@migration("records", 1)
def _records_1_to_2(record: dict[str, Any]) -> dict[str, Any]:
    """Version 1 (shards written before versions; the oldest lack the ``instruction_variants`` column):
    ``instruction_variants`` always holds the primary instruction, and a mask that came with the data
    (``mask_source: gt``) is also the record's ``gt_mask``, the one name of a shipped mask."""
    record = dict(record)
    variants = list(record.get("instruction_variants") or [])
    if not variants and record.get("instruction"):
        variants = [record["instruction"]]
    record["instruction_variants"] = variants
    if record.get("mask_source") == "gt" and record.get("gt_mask") is None:
        record["gt_mask"] = record.get("mask")
    return record


@migration("export", 1)
def _export_1_to_2(row: dict[str, Any]) -> dict[str, Any]:
    """Version 1 rows carried the record's ``mask_source`` (gt / diff / grounded / fused / human / whole / ...);
    version 2 names which mask the row carries (reviewed / shipped / fused / derived / none, see
    :mod:`editkit.export_columns`) and keeps the record's finer name in ``mask_method``."""
    from editkit.export_columns import MASK_METHOD, MASK_SOURCE, REVIEW_STATUS, mask_provenance

    row = dict(row)
    if MASK_SOURCE in row and MASK_METHOD not in row:
        method = row[MASK_SOURCE]
        row[MASK_METHOD] = method
        if method not in ("reviewed", "shipped", "derived"):  # ("fused" was the diff + grounded fusion: derived)
            row[MASK_SOURCE] = mask_provenance(method, row.get(REVIEW_STATUS))
    return row


@migration("reviews", 1)
def _reviews_1_to_2(document: Any) -> dict[str, Any]:
    """Version 1 was a bare JSON list of reviews; version 2 wraps it: ``{"schema_version": 2, "reviews": [...]}``."""
    if isinstance(document, list):
        return {VERSION_KEY: 2, "reviews": document}
    return document


@migration("reviews", 2)
def _reviews_2_to_3(document: dict[str, Any]) -> dict[str, Any]:
    """Version 3 keeps every reviewer's annotations side by side, each with its ``reviewer`` and ``created_at``;
    version 2 reviews (the latest annotation per sample, author unrecorded) become one ``"unknown"`` reviewer's."""
    reviews = [{"reviewer": "unknown", "created_at": None, **review} if isinstance(review, dict) else review
               for review in document.get("reviews") or []]
    return {**document, VERSION_KEY: 3, "reviews": reviews}
