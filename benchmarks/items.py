"""Benchmark items in our record schema, and the on-disk layout of a built (masked) benchmark.

A reader (:mod:`benchmarks.gedit`, :mod:`benchmarks.imgedit`) yields :class:`BenchItem`s; :func:`to_record` turns one
into a record (source image only, ``has_edited=False``) and :func:`write_benchmark` stores records + images::

    <out>/records/shard-00000.parquet   # editkit.schema.RECORD_SCHEMA, origin "gedit" / "imgedit"
    <out>/images/shard-00000.parquet    # editkit.store image shards (source image only)

Benchmark-specific fields (GEdit ``task_type``, ``instruction_language``, ``Intersection_exist``; ImgEdit
``edit_type`` and image path) live in the record's ``meta`` JSON, read back with :func:`meta`.
"""
from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np

from editkit import schema, store, taxonomy

SHARD_SIZE = 1000
BENCH_INFO = "bench.json"  # which benchmark, read from where, and its judge rubric when the release ships one


@dataclass
class BenchItem:
    """One benchmark row as read from the public release (before it becomes a record)."""

    origin: str  # "gedit" | "imgedit"
    key: str  # the benchmark's own key
    instruction: str
    category: str  # the benchmark's own category name (GEdit task_type / ImgEdit edit_type)
    image_bytes: bytes | None  # encoded source image as shipped; None when missing
    extra: dict[str, Any] = field(default_factory=dict)  # benchmark-specific fields, kept in record meta
    error: str | None = None  # why the item cannot be used (missing/corrupt image, unknown type...)
    flags: list[str] = field(default_factory=list)  # non-fatal findings (e.g. the release gives no edit type)
    mask: np.ndarray | None = None  # a mask shipped with the release (True = should change), used as gt


def to_record(item: BenchItem, edit_type: str | None) -> tuple[dict[str, Any], bytes]:
    """Record + the (validated, PNG-normalised) source bytes. A bad item becomes a rejected record, never dropped."""
    language = item.extra.get("instruction_language", "")
    record = schema.new_record(
        id=schema.content_id(item.origin, item.key, language),
        origin=item.origin,
        origin_key=item.key,
        has_edited=False,
        instruction=item.instruction,
        instruction_refined=item.instruction,
        rewrite_status="none",
        edit_type=edit_type,
        meta=json.dumps({"category": item.category, **item.extra}, sort_keys=True),
    )
    if edit_type is not None:
        record["scope"] = taxonomy.get(edit_type).scope
    for flag in item.flags:
        schema.add_flag(record, flag)
    error = item.error
    if error is None and edit_type is None and not item.flags:  # a flagged item has no type by the release's design
        error = f"unknown {item.origin} category {item.category!r}"
    data = b""
    if error is None:
        try:
            rgb = _decode_checked(item.image_bytes)
            data = store.encode_png(rgb)
            record["height"], record["width"] = int(rgb.shape[0]), int(rgb.shape[1])
        except ValueError as exc:
            error = str(exc)
    if error is not None:
        schema.reject(record, "bench_read", error)
    return record, data


def _decode_checked(data: bytes | None) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    if not data:
        raise ValueError("missing source image")
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            rgb = np.asarray(image.convert("RGB"))
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise ValueError(f"corrupt source image: {exc}") from None
    if rgb.shape[0] < 8 or rgb.shape[1] < 8:
        raise ValueError(f"source image too small: {rgb.shape[1]}x{rgb.shape[0]}")
    return rgb


def write_benchmark(out_dir: Path | str, records: Iterable[tuple[dict[str, Any], bytes]],
                    info: dict[str, Any] | None = None) -> int:
    """Write records + source images in shards of :data:`SHARD_SIZE` and ``info`` as ``bench.json`` (atomically)."""
    out_dir = Path(out_dir)
    count = 0
    with store.atomic_dir(out_dir) as tmp:
        store.write_json(tmp / BENCH_INFO, info or {})
        batch: list[tuple[dict[str, Any], bytes]] = []
        for pair in records:
            batch.append(pair)
            if len(batch) == SHARD_SIZE:
                _write_shard(tmp, count // SHARD_SIZE, batch)
                count += len(batch)
                batch = []
        if batch or count == 0:
            _write_shard(tmp, count // SHARD_SIZE, batch)
            count += len(batch)
    return count


def _write_shard(root: Path, index: int, batch: list[tuple[dict[str, Any], bytes]]) -> None:
    shard = store.shard_name(index)
    records = []
    for record, _ in batch:
        record["image_shard"] = shard
        records.append(record)
    store.write_records(root / "records", shard, records)
    store.write_image_shard(root / "images", shard, [{"id": r["id"], "source": data} for r, data in batch])


def iter_benchmark(bench_dir: Path | str) -> Iterator[tuple[str, list[dict[str, Any]], store.ImageShard]]:
    """Yield ``(shard, records, image_shard)`` of a built benchmark, one shard at a time."""
    bench_dir = Path(bench_dir)
    images = store.ImageStore(bench_dir / "images")
    for shard, records in store.iter_records(bench_dir / "records"):
        yield shard, records, images.shard(shard)


def load_records(bench_dir: Path | str) -> list[dict[str, Any]]:
    return [r for _, records in store.iter_records(Path(bench_dir) / "records") for r in records]


def bench_info(bench_dir: Path | str) -> dict[str, Any]:
    path = Path(bench_dir) / BENCH_INFO
    if not path.is_file():
        raise FileNotFoundError(f"{bench_dir} is not a built benchmark (no {BENCH_INFO}): run `editkit bench build`")
    return json.loads(path.read_text())


def meta(record: dict[str, Any]) -> dict[str, Any]:
    return json.loads(record.get("meta") or "{}")
