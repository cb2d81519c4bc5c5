"""`editkit view <stage>`: a static HTML gallery of a stage's records that opens from disk (no server, no network).

The gallery is one folder that can be copied anywhere::

    index.html                 # the page (HTML, CSS and vanilla JS from template.html; nothing fetched online)
    meta.js                    # stage, counts, the funnel, the filter vocabularies
    index/i-00000.js ...       # compact filter/sort rows, INDEX_CHUNK records per file (codes, flags, scores)
    pages/p-00000.js ...       # the records' details, PAGE_CHUNK per file, loaded only when shown
    thumbs/ab/<hash>.jpg       # thumbnails, named by a hash of what they show: written once, reused on reruns

Data files are JavaScript (``GALLERY.page(k, [...])``) rather than JSON because a page opened from ``file://`` may
load scripts but not ``fetch`` files. Building streams the record shards one at a time: memory holds one record
shard, one image shard and one chunk of output, whatever the number of records.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from editkit import rle, schema, store, thumbs
from editkit.errors import UserError

INDEX_CHUNK = 5000
PAGE_CHUNK = 100
PIPELINE_ORDER = ("ingest", "rewrite", "masks", "review", "score", "select", "export")
TEMPLATE = Path(__file__).with_name("template.html")


class _Vocab:
    """Strings -> small integer codes, in order of first appearance (the index rows carry codes)."""

    def __init__(self) -> None:
        self.codes: dict[str, int] = {}

    def __call__(self, value: str | None) -> int:
        key = "" if value is None else str(value)
        return self.codes.setdefault(key, len(self.codes))

    def values(self) -> list[str]:
        return list(self.codes)


def _js(path: Path, call: str, key: int | None, data: Any) -> None:
    head = f"GALLERY.{call}(" + ("" if key is None else f"{key},")
    text = head + json.dumps(data, separators=(",", ":"), allow_nan=False, default=_plain) + ");\n"
    store.atomic_write_text(path, text)


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(type(value).__name__)


def _score(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if np.isfinite(number) else None


class _Thumbs:
    """Writes the thumbnails of one record if any is missing (decoding its images only then)."""

    def __init__(self, out: Path) -> None:
        self.dir = thumbs.ThumbDir(out)

    @property
    def written(self) -> int:
        return self.dir.written

    @property
    def reused(self) -> int:
        return self.dir.reused

    def record(self, record: dict[str, Any], source: bytes | None, edited: bytes | None) -> dict[str, str]:
        if source is None:
            return {}
        src = thumbs.digest("source", source)
        keys = {"source": src}
        if edited is not None:
            edi = thumbs.digest("edited", edited)
            keys["edited"], keys["diff"] = edi, thumbs.digest("diff", src, edi)
        for name, field in (("mask", "mask"), ("shipped", "gt_mask")):
            mask = record.get(field)
            if mask and (name == "mask" or record.get("mask_source") != "gt"):
                keys[name] = thumbs.digest(name, src, json.dumps(mask, sort_keys=True))
        missing = {k for k, v in keys.items() if not self.dir.has(v)}
        images = self._draw(record, source, edited, missing) if missing else {}
        for name, key in keys.items():
            if name in images or name not in missing:
                self.dir.put(key, images.get(name))
        return {k: thumbs.rel_path(v) for k, v in keys.items()}

    def _draw(self, record, source, edited, missing) -> dict[str, Any]:
        src = thumbs.shrink(source)
        size = src.size
        images: dict[str, Any] = {"source": src}
        if edited is not None and ({"edited", "diff"} & missing):
            edi = thumbs.shrink(edited)
            images["edited"] = edi
            if "diff" in missing:
                images["diff"] = thumbs.difference(src, edi)
        for name, field in (("mask", "mask"), ("shipped", "gt_mask")):
            if name in missing:
                try:
                    mask = rle.decode(record[field])
                except (ValueError, TypeError, KeyError):
                    mask = np.zeros((size[1], size[0]), bool)
                colour = thumbs.MASK_COLOUR if name == "mask" else thumbs.SECOND_MASK_COLOUR
                images[name] = thumbs.mask_over(src, mask, colour)
        return {k: v for k, v in images.items() if k in missing}


def _records(records_dir: Path) -> Iterator[list[dict[str, Any]]]:
    for _shard, records in store.iter_records(records_dir):
        yield records


def build(stage: str, data_dir: Path | str = "data", out: Path | str | None = None, images: Path | str | None = None,
          progress: bool = True) -> dict[str, Any]:
    """Write the gallery of ``<data_dir>/<stage>/records`` into ``out`` (default ``<data_dir>/gallery/<stage>``).

    Returns counts: ``records``, ``thumbs_written``, ``thumbs_reused``, ``index`` (the page's path)."""
    from tqdm.auto import tqdm

    data_dir = Path(data_dir)
    records_dir = data_dir / stage / "records"
    if not store.list_shards(records_dir):
        stages = sorted(p.parent.name for p in data_dir.glob("*/records") if store.list_shards(p))
        raise UserError(f"no records at {records_dir}: run the pipeline first (dvc repro)"
                        + (f"; stages with records: {', '.join(stages)}" if stages else ""))
    out = Path(out) if out is not None else data_dir / "gallery" / stage
    image_store = store.ImageStore(images if images is not None else data_dir / "ingest" / "images")
    for sub in ("index", "pages"):
        shutil.rmtree(out / sub, ignore_errors=True)
        (out / sub).mkdir(parents=True, exist_ok=True)
    total = store.count_records(records_dir)
    vocab = {name: _Vocab() for name in ("edit_type", "status", "reject_stage", "reject_reason", "flag", "dataset",
                                         "score")}
    thumbs = _Thumbs(out)
    index_rows: list[list[Any]] = []
    page_rows: list[dict[str, Any]] = []
    n = 0
    funnel: dict[str, int] = {}
    reasons: dict[str, int] = {}
    with tqdm(total=total, desc=f"gallery {stage}", unit="rec", disable=not progress) as bar:
        for records in _records(records_dir):
            for record in records:
                source = edited = None
                if record.get("image_shard"):
                    try:
                        shard = image_store.shard(record["image_shard"])
                        if record["id"] in shard:
                            source, edited = shard.source_bytes(record["id"]), shard.edited_bytes(record["id"])
                    except FileNotFoundError:
                        pass
                paths = thumbs.record(record, source, edited)
                rejected = record.get("status") == schema.STATUS_REJECTED
                stage_of = record.get("reject_stage") if rejected else None
                reason = record.get("reject_reason") if rejected else None
                if rejected:
                    funnel[stage_of or "?"] = funnel.get(stage_of or "?", 0) + 1
                    reasons[reason or "?"] = reasons.get(reason or "?", 0) + 1
                scores = {str(k): _score(v) for k, v in (record.get("scores") or {}).items()}
                index_rows.append([vocab["edit_type"](record.get("edit_type")), vocab["status"](record.get("status")),
                                   vocab["reject_stage"](stage_of), vocab["reject_reason"](reason),
                                   [vocab["flag"](f) for f in record.get("flags") or []],
                                   vocab["dataset"](record.get("origin")),
                                   {vocab["score"](k): v for k, v in scores.items() if v is not None}])
                page_rows.append({"id": record.get("id"), "instruction": record.get("instruction_refined")
                                  or record.get("instruction"), "edit_type": record.get("edit_type"),
                                  "origin": record.get("origin"), "origin_key": record.get("origin_key"),
                                  "status": record.get("status"), "reject_stage": stage_of, "reject_reason": reason,
                                  "flags": list(record.get("flags") or []), "mask_source": record.get("mask_source"),
                                  "scores": scores, "size": [record.get("width"), record.get("height")],
                                  "thumbs": paths})
                n += 1
                if len(page_rows) == PAGE_CHUNK:
                    _js(out / "pages" / f"p-{(n - 1) // PAGE_CHUNK:05d}.js", "page", (n - 1) // PAGE_CHUNK, page_rows)
                    page_rows = []
                if len(index_rows) == INDEX_CHUNK:
                    _js(out / "index" / f"i-{(n - 1) // INDEX_CHUNK:05d}.js", "index", (n - 1) // INDEX_CHUNK,
                        index_rows)
                    index_rows = []
                bar.update(1)
    if page_rows:
        _js(out / "pages" / f"p-{(n - 1) // PAGE_CHUNK:05d}.js", "page", (n - 1) // PAGE_CHUNK, page_rows)
    if index_rows:
        _js(out / "index" / f"i-{(n - 1) // INDEX_CHUNK:05d}.js", "index", (n - 1) // INDEX_CHUNK, index_rows)
    order = [s for s in PIPELINE_ORDER if s in funnel] + sorted(s for s in funnel if s not in PIPELINE_ORDER)
    meta = {"stage": stage, "records": n, "index_chunk": INDEX_CHUNK, "page_chunk": PAGE_CHUNK,
            "index_chunks": (n + INDEX_CHUNK - 1) // INDEX_CHUNK,
            "funnel": [[s, funnel[s]] for s in order], "rejected_by_reason": sorted(reasons.items(),
                                                                                   key=lambda kv: (-kv[1], kv[0])),
            "vocab": {name: v.values() for name, v in vocab.items()}}
    _js(out / "meta.js", "meta", None, meta)
    store.atomic_write_text(out / "index.html", TEMPLATE.read_text())
    return {"records": n, "thumbs_written": thumbs.written, "thumbs_reused": thumbs.reused,
            "index": str(out / "index.html")}


def view(stage: str, data_dir: str = "data", out: str | None = None, images: str | None = None,
         progress: bool = True) -> None:
    """The command: build, then say where the page is."""
    result = build(stage, data_dir, out, images, progress)
    print(f"gallery of {result['records']} {stage} records: {Path(result['index']).resolve().as_uri()} "
          f"(thumbnails: {result['thumbs_written']} written, {result['thumbs_reused']} reused)")
