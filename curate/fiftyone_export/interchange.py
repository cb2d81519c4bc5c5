"""The interchange a FiftyOne dataset is built from: plain files that FiftyOne's own virtualenv reads.

One folder per dataset, self-contained (no pickle, nothing of ours to import)::

    manifest.json        # name, stage, slices, mask fields, embedding model, counts, provenance of the build
    samples.jsonl        # one group (record) a line: fields, tags, each slice's image and embedding row, mask PNGs
    media/ab/<sha1>.png  # the source and edited images as stored (PNG/JPEG/WebP kept; other formats as PNG)
    masks/ab/<sha1>.png  # masks as 8-bit PNGs, 255 = pixels that should change, 0 = keep
    embeddings.npy       # float32 (2 x records, D): row 2i the source image of line i, row 2i+1 its edited image

Media and masks are named by a hash of their content, so a rebuild writes only what changed; files no longer
referenced are removed at the end. The FiftyOne dataset points at these files: keep the folder while you use it.
Records are streamed: memory holds one batch of records and their images, whatever the number of records.
"""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import numpy as np

from editkit import export_columns as columns
from editkit import rle, schema, store
from editkit.errors import UserError

FORMAT = "editkit-fiftyone/1"
SLICES = ("source", "edited")
EMBEDDING_FIELD = "clip_embedding"
BRAIN_KEY = "clip_sim"
MASK_VALUE = 255  # the value of "should change" pixels in the mask PNGs
STAGE_MASKS = ("mask", "gt_mask", "mask_predicted")
EXPORT_MASKS = (columns.MASK, columns.SHIPPED_MASK)
# record fields kept as FiftyOne fields, under their own names unless renamed here (FiftyOne reserves id and dataset)
RENAMED = {"id": "record_id", "dataset": "source_dataset"}
_NOT_FIELDS = {"scores", "phash", *STAGE_MASKS}
_KEPT_FORMATS = {b"\x89PNG": ".png", b"\xff\xd8\xff": ".jpg"}


@dataclass
class Item:
    """One record as the interchange needs it."""

    record_id: str
    source: bytes
    edited: Optional[bytes]
    masks: dict[str, Any]  # field -> COCO RLE or None
    scores: dict[str, Any]
    tags: list[str]
    fields: dict[str, Any]


def _field_name(name: str) -> str:
    name = RENAMED.get(name, name)
    return "".join(c if c.isalnum() or c == "_" else "_" for c in name)


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _score(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def provenance(record: dict[str, Any]) -> dict[str, Any]:
    """The dataset, split and licence the record came from (as the export names them)."""
    meta = columns.parse_meta(record.get("meta"))
    return {"dataset": columns.dataset_name(record, meta), "split": columns.split_name(record, meta),
            "licence": columns.licence_of(record, meta)}


def stage_items(records_dir: Path, images_dir: Path) -> Iterator[Item]:
    """A stage's records (``data/<stage>/records``) with their images from the ingest image store."""
    images = store.ImageStore(images_dir)
    for _shard, records in store.iter_records(records_dir):
        for record in records:
            try:
                shard = images.shard(record["image_shard"])
            except (FileNotFoundError, KeyError, TypeError):
                continue
            if record["id"] not in shard:
                continue
            rejected = record.get("status") == schema.STATUS_REJECTED
            tags = list(record.get("flags") or [])
            if rejected and record.get("reject_reason"):
                tags.append(record["reject_reason"])
            fields = {k: v for k, v in record.items() if k not in _NOT_FIELDS}
            fields.update(provenance(record))
            phash = record.get("phash") or {}
            fields.update({f"phash_{k}": f"{int(v):016x}" for k, v in phash.items() if v is not None})
            yield Item(record_id=record["id"], source=shard.source_bytes(record["id"]),
                       edited=shard.edited_bytes(record["id"]), masks={k: record.get(k) for k in STAGE_MASKS},
                       scores=dict(record.get("scores") or {}), tags=list(dict.fromkeys(tags)), fields=fields)


def export_items(dataset_dir: Path) -> Iterator[Item]:
    """The rows of the exported dataset (``data/export/dataset``, ``datasets.load_from_disk``)."""
    from datasets import Image, load_from_disk

    try:
        dataset = load_from_disk(str(dataset_dir))
    except (FileNotFoundError, ValueError) as error:
        raise UserError(f"no exported dataset at {dataset_dir} ({error}): run the pipeline first (dvc repro)") from None
    for name in columns.IMAGE_COLUMNS:
        if name in dataset.column_names:
            dataset = dataset.cast_column(name, Image(decode=False))
    skip = {columns.SOURCE_IMAGE, columns.EDITED_IMAGE, columns.MASK_IMAGE, *EXPORT_MASKS}
    for row in dataset:
        source = (row.get(columns.SOURCE_IMAGE) or {}).get("bytes")
        if source is None:
            continue
        edited = (row.get(columns.EDITED_IMAGE) or {}).get("bytes")
        scores = {k[len(columns.SCORE_PREFIX):]: v for k, v in row.items() if k.startswith(columns.SCORE_PREFIX)}
        fields = {k: v for k, v in row.items() if k not in skip and not k.startswith(columns.SCORE_PREFIX)}
        yield Item(record_id=row[columns.ID], source=source, edited=edited,
                   masks={k: row.get(k) for k in EXPORT_MASKS}, scores=scores,
                   tags=list(dict.fromkeys(row.get(columns.FLAGS) or [])), fields=fields)


def _digest(data: bytes) -> str:
    return hashlib.sha1(data).hexdigest()


def _media_suffix(data: bytes) -> str | None:
    for magic, suffix in _KEPT_FORMATS.items():
        if data.startswith(magic):
            return suffix
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return ".webp"
    return None


class _Files:
    """Content-addressed media and mask files under the interchange folder (written once, kept while referenced)."""

    def __init__(self, out: Path) -> None:
        self.out, self.used, self.written = out, set(), 0

    def _put(self, kind: str, key: str, suffix: str, data: Callable[[], bytes]) -> str:
        rel = f"{kind}/{key[:2]}/{key}{suffix}"
        self.used.add(rel)
        path = self.out / rel
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            _write(path, data())
            self.written += 1
        return rel

    def image(self, data: bytes) -> str:
        suffix = _media_suffix(data)
        if suffix is None:  # a format browsers may not show (TIFF, BMP, ...): stored as PNG
            return self._put("media", _digest(data), ".png", lambda: store.encode_png(store.decode_rgb(data)))
        return self._put("media", _digest(data), suffix, lambda: data)

    def mask(self, mask_rle: dict[str, Any]) -> str:
        key = _digest(json.dumps({"size": list(mask_rle["size"]), "counts": mask_rle["counts"]}).encode())
        return self._put("masks", key, ".png",
                         lambda: store.encode_png(rle.decode(mask_rle).astype(np.uint8) * MASK_VALUE))

    def prune(self) -> int:
        removed = 0
        for kind in ("media", "masks"):
            for path in sorted((self.out / kind).glob("*/*")):
                if path.relative_to(self.out).as_posix() not in self.used:
                    path.unlink()
                    removed += 1
        return removed


def _write(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)


def write(items: Iterator[Item], out: Path, *, name: str, stage: str, origin: str, total: int,
          embed: Optional[Callable[[list[bytes]], np.ndarray]] = None, embedding_model: Optional[str] = None,
          batch_size: int = 256, progress: bool = True) -> dict[str, Any]:
    """Write the interchange of ``items`` into ``out``; returns the manifest.

    ``embed`` maps encoded images to L2-normalised vectors (N, D) (e.g. :meth:`editkit.clip.ClipScorer.embed_images`);
    None: no embeddings."""
    from tqdm.auto import tqdm

    out.mkdir(parents=True, exist_ok=True)
    files = _Files(out)
    vectors: Optional[np.ndarray] = None
    mask_fields: dict[str, None] = {}
    score_fields: dict[str, None] = {}
    n = 0
    samples_tmp = out / "samples.jsonl.tmp"
    embeddings_path = out / "embeddings.npy"
    embeddings_path.unlink(missing_ok=True)

    def flush(batch: list[Item], lines) -> None:
        nonlocal vectors, n
        if embed is not None and batch:
            images = [image for item in batch for image in (item.source, item.edited) if image is not None]
            found = embed(images)
            if vectors is None:
                vectors = np.lib.format.open_memmap(embeddings_path, mode="w+", dtype=np.float32,
                                                    shape=(2 * max(total, 1), found.shape[1]))
            rows = iter(found)
        for item in batch:
            line: dict[str, Any] = {"record_id": item.record_id, "tags": [str(t) for t in item.tags], "slices": {}}
            for k, (slice_name, image) in enumerate(zip(SLICES, (item.source, item.edited))):
                if image is None:
                    continue
                entry: dict[str, Any] = {"filepath": files.image(image)}
                if embed is not None:
                    if 2 * n + k >= len(vectors):
                        raise UserError("more records than counted: the stage changed while it was exported")
                    vectors[2 * n + k] = next(rows)
                    entry["embedding"] = 2 * n + k
                line["slices"][slice_name] = entry
            line["masks"] = {}
            for field, value in item.masks.items():
                if value is not None and value.get("counts") is not None:
                    line["masks"][field] = files.mask(value)
                    mask_fields[field] = None
            fields = {_field_name(k): _plain(v) for k, v in item.fields.items()}
            for key, value in item.scores.items():
                fields[f"{columns.SCORE_PREFIX}{_field_name(str(key))}"] = _score(value)
                score_fields[f"{columns.SCORE_PREFIX}{_field_name(str(key))}"] = None
            fields["record_id"] = item.record_id
            line["fields"] = fields
            lines.write(json.dumps(line, allow_nan=False, separators=(",", ":")) + "\n")
            n += 1

    batch: list[Item] = []
    with samples_tmp.open("w") as lines, tqdm(total=total, desc=f"fiftyone {stage}: interchange", unit="rec",
                                               disable=not progress) as bar:
        for item in items:
            batch.append(item)
            if len(batch) >= batch_size:
                flush(batch, lines)
                bar.update(len(batch))
                batch = []
        flush(batch, lines)
        bar.update(len(batch))
    samples_tmp.replace(out / "samples.jsonl")
    if vectors is not None:
        vectors.flush()
        dim = int(vectors.shape[1])
        del vectors
    removed = files.prune()
    manifest = {
        "format": FORMAT, "name": name, "stage": stage, "origin": origin, "records": n, "slices": list(SLICES),
        "default_slice": SLICES[0], "samples": "samples.jsonl", "mask_fields": list(mask_fields),
        "mask_targets": {str(MASK_VALUE): "edit"}, "score_fields": list(score_fields), "batch_size": batch_size,
        "embeddings": None if embed is None or n == 0 else {
            "file": embeddings_path.name, "field": EMBEDDING_FIELD, "model": embedding_model, "dim": dim,
            "brain_key": BRAIN_KEY},
        "files": {"written": files.written, "removed": removed},
    }
    store.write_json(out / "manifest.json", manifest)
    return manifest
