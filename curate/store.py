"""On-disk layout of stage outputs: record shards and image shards, always written atomically.

A stage output directory looks like::

    data/<stage>/records/shard-00000.parquet   # metadata only, curate.schema.RECORD_SCHEMA
    data/ingest/images/shard-00000.parquet     # written once by ingest: id, source_image, edited_image

Images are stored once, as encoded bytes in Parquet (the Hugging Face ``Image`` feature layout ``{bytes, path}``),
sharded ~1,000 records per file: DVC and the filesystem see a few hundred files at 10^5–10^6 records instead of
millions, and metadata-only stages never copy pixels. Record shard ``shard-k`` and image shard ``shard-k`` hold the
same ids (records carry ``image_shard`` explicitly, so later stages may re-shard records if they need to).
"""
from __future__ import annotations

import io
import json
import os
import shutil
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from curate import schema

IMAGE_STRUCT = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
IMAGE_SCHEMA = pa.schema([("id", pa.string()), ("source_image", IMAGE_STRUCT), ("edited_image", IMAGE_STRUCT)])
SHARD_GLOB = "shard-*.parquet"


def shard_name(index: int) -> str:
    return f"shard-{index:05d}"


@contextmanager
def atomic_dir(final: Path | str) -> Iterator[Path]:
    """Yield a temp directory beside ``final``; on success it replaces ``final`` in one rename.

    A run killed at any point leaves at most a ``*.tmp-*`` directory, which no stage mistakes for finished work.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f"{final.name}.tmp-{uuid.uuid4().hex[:8]}")
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if final.exists():
        old = final.with_name(f"{final.name}.old-{uuid.uuid4().hex[:8]}")
        final.rename(old)
        tmp.rename(final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        tmp.rename(final)


def atomic_write_text(path: Path | str, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_json(path: Path | str, data: Any) -> None:
    """Atomically write JSON (sorted keys, stable output so DVC sees no spurious change)."""
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True, default=_json_default) + "\n")


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


# ---------------------------------------------------------------- records
def list_shards(directory: Path | str) -> list[str]:
    """Shard names (without suffix) in a records or images directory, sorted."""
    return sorted(p.stem for p in Path(directory).glob(SHARD_GLOB))


def write_records(directory: Path | str, shard: str, records: list[dict[str, Any]]) -> Path:
    path = Path(directory) / f"{shard}.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(schema.to_table(records), path, compression="zstd")
    return path


def read_records(directory: Path | str, shard: str) -> list[dict[str, Any]]:
    return schema.from_table(pq.read_table(Path(directory) / f"{shard}.parquet"))


def iter_records(directory: Path | str) -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """Yield ``(shard, records)`` one shard at a time (streaming: one shard in memory)."""
    directory = Path(directory)
    shards = list_shards(directory)
    if not shards and not directory.exists():
        raise FileNotFoundError(f"no records at {directory}: run the previous stage first (dvc repro)")
    for shard in shards:
        yield shard, read_records(directory, shard)


def count_records(directory: Path | str) -> int:
    return sum(pq.ParquetFile(Path(directory) / f"{s}.parquet").metadata.num_rows for s in list_shards(directory))


# ---------------------------------------------------------------- images
def write_image_shard(directory: Path | str, shard: str, rows: list[dict[str, Any]]) -> Path:
    """rows: ``{"id", "source": bytes, "edited": bytes | None, "source_path"?, "edited_path"?}``."""
    table = pa.Table.from_pylist(
        [
            {
                "id": r["id"],
                "source_image": {"bytes": r["source"], "path": r.get("source_path")},
                "edited_image": None if r.get("edited") is None else {"bytes": r["edited"], "path": r.get("edited_path")},
            }
            for r in rows
        ],
        schema=IMAGE_SCHEMA,
    )
    path = Path(directory) / f"{shard}.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    # Encoded images do not compress further; small row groups keep random access cheap.
    pq.write_table(table, path, compression="none", row_group_size=64)
    return path


class ImageShard:
    """Encoded source/edited images of one shard, decoded on demand."""

    def __init__(self, path: Path | str):
        table = pq.read_table(path)
        ids = table.column("id").to_pylist()
        sources = table.column("source_image").to_pylist()
        edits = table.column("edited_image").to_pylist()
        self._rows = {i: (s, e) for i, s, e in zip(ids, sources, edits)}

    def __contains__(self, record_id: str) -> bool:
        return record_id in self._rows

    def source_bytes(self, record_id: str) -> bytes:
        return self._rows[record_id][0]["bytes"]

    def edited_bytes(self, record_id: str) -> bytes | None:
        edited = self._rows[record_id][1]
        return None if edited is None else edited["bytes"]

    def source(self, record_id: str) -> np.ndarray:
        return decode_rgb(self.source_bytes(record_id))

    def edited(self, record_id: str) -> np.ndarray | None:
        data = self.edited_bytes(record_id)
        return None if data is None else decode_rgb(data)


class ImageStore:
    """All image shards of a run (``data/ingest/images``), loading one shard at a time."""

    def __init__(self, directory: Path | str):
        self.directory = Path(directory)
        self._cache: tuple[str, ImageShard] | None = None

    def shard(self, name: str) -> ImageShard:
        if self._cache is None or self._cache[0] != name:
            path = self.directory / f"{name}.parquet"
            if not path.exists():
                raise FileNotFoundError(f"image shard {path} is missing: rerun ingest (dvc repro ingest)")
            self._cache = (name, ImageShard(path))
        return self._cache[1]

    def source(self, record: dict[str, Any]) -> np.ndarray:
        return self.shard(record["image_shard"]).source(record["id"])

    def edited(self, record: dict[str, Any]) -> np.ndarray | None:
        return self.shard(record["image_shard"]).edited(record["id"])


def decode_rgb(data: bytes) -> np.ndarray:
    """Encoded image bytes (already validated by ingest) -> HxWx3 uint8."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGB"))


def encode_png(array: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.asarray(array, dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()
