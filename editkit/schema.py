"""The one record schema every stage reads and writes.

An *edit sample* is a (source image, instruction, edited image) triple plus everything the pipeline learns about it.
Records are plain ``dict``s in Python (cheap to build, easy to test) and Arrow rows on disk; this module is the only
place that knows the column types.

Conventions
-----------
* ``mask`` marks the pixels that SHOULD change (1 = edit region, 0 = keep). Every reader/writer of a foreign format
  (Label Studio alpha, ImgEdit's white-is-background, PIE-Bench runs) converts at its boundary.
* Masks are COCO compressed RLE dicts ``{"size": [h, w], "counts": str}`` (see :mod:`editkit.rle`).
* Images are NOT stored in records. They are written once by ``ingest`` into image shards (see :mod:`editkit.store`)
  and referenced by ``image_shard``; ``export`` embeds the bytes into the final Hugging Face dataset.
* A record is never dropped: a stage that rejects it sets ``status="rejected"``, ``reject_stage`` and
  ``reject_reason`` and passes it on; later stages skip rejected records but keep them.
"""
from __future__ import annotations

import hashlib
from typing import Any, Iterable

import pyarrow as pa

from editkit import schema_versions

STATUS_OK = "ok"
STATUS_REJECTED = "rejected"

MASK_SOURCES = ("gt", "gt_fused", "diff", "grounded", "fused", "human", "whole", "none")  # gt_fused: shipped ∪ derived

RLE_TYPE = pa.struct([("size", pa.list_(pa.int32())), ("counts", pa.string())])

# Column order is the on-disk order. Append new fields at the end of their group; never rename. A change that old
# shards cannot be read as (a renamed or re-meant field) bumps schema_versions.CURRENT["records"] with a migration.
RECORD_SCHEMA = pa.schema(
    [
        # identity and provenance
        ("id", pa.string()),
        ("origin", pa.string()),  # "sample", "folder:<name>", "hf:<dataset>", "gedit", "imgedit"
        ("origin_key", pa.string()),  # the id in the origin (file name, dataset row key), for tracing back
        ("image_shard", pa.string()),  # shard name in the image store, e.g. "shard-00003"
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("has_edited", pa.bool_()),  # False for benchmark items (source + instruction only)
        # instruction
        ("instruction", pa.string()),
        ("instruction_refined", pa.string()),
        ("rewrite_status", pa.string()),  # "none" (pass-through), "ok", "repaired", "fallback:<reason>"
        ("edit_type", pa.string()),  # see editkit.taxonomy
        ("scope", pa.string()),  # "local" | "global"
        ("target_phrases", pa.list_(pa.string())),
        # masks
        ("mask", RLE_TYPE),
        ("mask_source", pa.string()),  # one of MASK_SOURCES
        ("gt_mask", RLE_TYPE),  # ground truth when known (built-in sample, user-supplied)
        ("flags", pa.list_(pa.string())),  # non-fatal findings, e.g. "grounding_disagrees"
        # scores: name -> value; export flattens to score_<name> columns
        ("scores", pa.map_(pa.string(), pa.float64())),
        # human review (Label Studio)
        ("review_status", pa.string()),  # None | "accept" | "fixed" | "reject"
        ("review_comment", pa.string()),
        ("mask_predicted", RLE_TYPE),  # the pipeline's mask as shown to the reviewer
        # outcome
        ("status", pa.string()),  # STATUS_OK | STATUS_REJECTED
        ("reject_stage", pa.string()),
        ("reject_reason", pa.string()),
        ("meta", pa.string()),  # free-form JSON for stage-specific provenance
        # 64-bit pHashes (score stage), near-duplicate removal
        ("phash", pa.struct([("source", pa.uint64()), ("edited", pa.uint64()), ("change", pa.uint64())])),
        ("instruction_variants", pa.list_(pa.string())),  # every instruction the dataset ships (primary included)
    ],
    metadata=schema_versions.parquet_metadata("records"),  # every shard written carries the records' schema version
)

FIELDS = tuple(RECORD_SCHEMA.names)
_LIST_FIELDS = {"target_phrases", "flags", "instruction_variants"}


def new_record(**values: Any) -> dict[str, Any]:
    """A record with every field present (None / empty by default) and ``values`` filled in."""
    unknown = set(values) - set(FIELDS)
    if unknown:
        raise KeyError(f"unknown record field(s) {sorted(unknown)}; the schema is editkit.schema.RECORD_SCHEMA")
    record: dict[str, Any] = {name: None for name in FIELDS}
    for name in _LIST_FIELDS:
        record[name] = []
    record["scores"] = {}
    record["status"] = STATUS_OK
    record.update(values)
    return record


def content_id(*parts: bytes | str) -> str:
    """Stable, content-derived id: the first 16 hex digits of SHA-1 over the parts (length-prefixed).

    Text that is not valid Unicode (a lone surrogate from a JSON ``\\ud800`` escape) still hashes, to its
    ``surrogatepass`` bytes: an id never fails; whether such text may be stored is the caller's check
    (:func:`unencodable`)."""
    digest = hashlib.sha1()
    for part in parts:
        data = part.encode("utf-8", "surrogatepass") if isinstance(part, str) else bytes(part)
        digest.update(len(data).to_bytes(8, "little"))
        digest.update(data)
    return digest.hexdigest()[:16]


def unencodable(text: str | None) -> bool:
    """True when ``text`` cannot be stored as UTF-8 (Arrow strings): it holds a lone surrogate."""
    if text is None:
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def storable_text(text: str) -> str:
    """``text`` with lone surrogates written as ``\\udXXX`` escapes (valid UTF-8, still traceable)."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def reject(record: dict[str, Any], stage: str, reason: str) -> dict[str, Any]:
    """Mark a record rejected (in place) and return it. The first rejection wins."""
    if record.get("status") != STATUS_REJECTED:
        record["status"] = STATUS_REJECTED
        record["reject_stage"] = stage
        record["reject_reason"] = reason
    return record


def is_ok(record: dict[str, Any]) -> bool:
    return record.get("status") == STATUS_OK


def add_flag(record: dict[str, Any], flag: str) -> None:
    flags = list(record.get("flags") or [])
    if flag not in flags:
        flags.append(flag)
    record["flags"] = flags


def to_table(records: Iterable[dict[str, Any]]) -> pa.Table:
    """Records -> Arrow table with :data:`RECORD_SCHEMA` (scores dicts become Arrow maps)."""
    rows = []
    for record in records:
        row = {name: record.get(name) for name in FIELDS}
        scores = row.get("scores") or {}
        row["scores"] = [(str(k), None if v is None else float(v)) for k, v in scores.items()]
        rows.append(row)
    return pa.Table.from_pylist(rows, schema=RECORD_SCHEMA)


def from_table(table: pa.Table, where: str = "") -> list[dict[str, Any]]:
    """Arrow table -> records (maps back to dicts; missing columns filled with defaults).

    A table of an older records version (its schema metadata; none = version 1) is migrated record by record; a
    newer one fails with :class:`editkit.schema_versions.UnsupportedVersion` (``where`` names the file)."""
    version = schema_versions.check("records", schema_versions.parquet_version(table.schema.metadata), where)
    old = version < schema_versions.CURRENT["records"]
    records = []
    for row in table.to_pylist():
        scores = row.get("scores") or []
        row["scores"] = dict(scores) if not isinstance(scores, dict) else scores
        for name in _LIST_FIELDS:
            row[name] = list(row.get(name) or [])
        record = new_record(**{k: v for k, v in row.items() if k in FIELDS})
        records.append(schema_versions.migrate("records", record, version, where) if old else record)
    return records
