"""On-disk layout of stage outputs: record shards and image shards, always written atomically.

A stage output directory looks like::

    data/<stage>/records/shard-00000.parquet   # metadata only, editkit.schema.RECORD_SCHEMA
    data/ingest/images/shard-00000.parquet     # written once by ingest: id, source_image, edited_image

Images are stored once, as encoded bytes in Parquet (the Hugging Face ``Image`` feature layout ``{bytes, path}``),
sharded ~1,000 records per file: DVC and the filesystem see a few hundred files at 10^5–10^6 records instead of
millions, and metadata-only stages never copy pixels. Record shard ``shard-k`` and image shard ``shard-k`` hold the
same ids (records carry ``image_shard`` explicitly, so later stages may re-shard records if they need to).
"""
from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from editkit import schema
from editkit.atomic import (  # noqa: F401  (the store's API)
    atomic_dir, atomic_dirs, atomic_write_text, recover, recover_input, refuse_foreign)

IMAGE_STRUCT = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
IMAGE_SCHEMA = pa.schema([("id", pa.string()), ("source_image", IMAGE_STRUCT), ("edited_image", IMAGE_STRUCT)])
SHARD_GLOB = "shard-*.parquet"


def shard_name(index: int) -> str:
    return f"shard-{index:05d}"


def write_json(path: Path | str, data: Any) -> None:
    """Atomically write JSON (sorted keys, stable output so DVC sees no spurious change)."""
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True, default=_json_default) + "\n")


# Wall-clock measurements differ on every run and machine; kept out of the DVC-tracked metrics files so that
# `dvc repro` on a fresh clone reproduces dvc.lock (they are still printed and returned by the stages).
RUN_DEPENDENT_KEYS = frozenset({"seconds", "records_per_s"})


def write_metrics(path: Path | str, metrics: dict[str, Any]) -> None:
    """:func:`write_json` of a stage's metrics without the run-dependent keys (:data:`RUN_DEPENDENT_KEYS`)."""
    write_json(path, _without_timings(metrics))


def _without_timings(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_timings(v) for k, v in value.items() if k not in RUN_DEPENDENT_KEYS}
    if isinstance(value, list):
        return [_without_timings(v) for v in value]
    return value


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
    path = Path(directory) / f"{shard}.parquet"
    return schema.from_table(pq.read_table(path), where=str(path))  # an older schema version is migrated


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
class ImageShardWriter:
    """Streams one image shard (:data:`IMAGE_SCHEMA`) in row groups of 64 pairs, so a writer holds 64 pairs' bytes in
    memory instead of a whole shard (1,000 pairs of large photos would be gigabytes).

    Rows are ``{"id", "source": bytes, "edited": bytes | None, "source_path"?, "edited_path"?}``. Encoded images do
    not compress further, and small row groups keep random access cheap. The file exists after :meth:`close` even
    when no row was added, so a shard whose records were all rejected is visible, not missing.
    """

    ROW_GROUP = 64

    def __init__(self, path: Path | str):
        self.path, self.rows, self.writer = Path(path), [], None

    def add(self, row: dict[str, Any]) -> None:
        self.rows.append(row)
        if len(self.rows) >= self.ROW_GROUP:
            self._write()

    def _write(self) -> None:
        if self.writer is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.writer = pq.ParquetWriter(self.path, IMAGE_SCHEMA, compression="none")
        rows = [{"id": r["id"], "source_image": _image_cell(r.get("source"), r.get("source_path")),
                 "edited_image": _image_cell(r.get("edited"), r.get("edited_path"))} for r in self.rows]
        self.writer.write_table(pa.Table.from_pylist(rows, schema=IMAGE_SCHEMA))
        self.rows = []

    def close(self) -> Path:
        if self.rows or self.writer is None:
            self._write()
        self.writer.close()
        return self.path

    def __enter__(self) -> "ImageShardWriter":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _image_cell(data: bytes | None, path: str | None) -> dict[str, Any] | None:
    return None if data is None else {"bytes": data, "path": path}


def write_image_shard(directory: Path | str, shard: str, rows: list[dict[str, Any]]) -> Path:
    """Write a whole image shard at once (see :class:`ImageShardWriter` for the row format)."""
    with ImageShardWriter(Path(directory) / f"{shard}.parquet") as writer:
        for row in rows:
            writer.add(row)
    return writer.path


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
