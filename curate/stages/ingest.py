"""The `ingest` stage: read edit pairs from a source, validate/normalise the images, write record + image shards.

Output (one atomic rename of ``--out``, so a killed run leaves either the previous output or none)::

    <out>/records/shard-00000.parquet   # editkit.schema records, ~shard_size per shard, rejected ones included
    <out>/images/shard-00000.parquet    # the normalised image bytes of the ok records of the same shard
    metrics/ingest.json                 # counts per edit type and rejects per reason

Ids are content-derived (``schema.content_id`` of the raw source bytes, edited bytes and instruction) and unique: a
later pair with an id already seen gets its own id (derived from the first one and its occurrence number), names the
first in ``meta.duplicate_of`` and is rejected as a duplicate. Reruns produce identical files.
"""
from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Iterable, Optional

import typer

from editkit import config, rle, schema, store, taxonomy
from curate import images
from curate.sources import SOURCES
from curate.sources.folder import FolderParams
from curate.sources.hf import HFParams
from curate.sources.presets import PresetParams
from editkit.config_meta import Range, check_fields

STAGE = "ingest"


@dataclass
class IngestParams:
    source: str = "sample"
    """where pairs come from: sample, folder, hf or preset (a key of curate.sources.SOURCES)"""
    shard_size: Annotated[int, Range(ge=1)] = 1000
    """records per record/image shard"""
    max_side: Annotated[Optional[int], Range(ge=1)] = None
    """downscale pairs whose longer side exceeds this many pixels (null: keep the size)"""
    max_pixels: Annotated[int, Range(ge=1, le=images.PIL_DEFAULT_MAX_PIXELS)] = images.PIL_DEFAULT_MAX_PIXELS
    """images with more pixels are rejected from their header (PIL's decompression-bomb limit is also the max)"""
    aspect_tolerance: Annotated[float, Range(ge=0, le=1)] = 0.01
    """an edited image of another size but the same aspect (within this relative gap) is resized; else rejected"""
    folder: FolderParams = field(default_factory=FolderParams)
    """source folder: a folder with pairs.jsonl and the images"""
    hf: HFParams = field(default_factory=HFParams)
    """source hf: a hub or local `datasets` dataset with one column per field"""
    preset: PresetParams = field(default_factory=PresetParams)
    """source preset: a published editing dataset in its own layout"""

    def __post_init__(self) -> None:
        check_fields(self)
        if self.source not in SOURCES:
            raise ValueError(f"ingest.source must be one of {SOURCES.names()}, got {self.source!r}")

    def policy(self) -> images.ImagePolicy:
        return images.ImagePolicy(self.max_pixels, self.max_side, self.aspect_tolerance)


def open_source(params: IngestParams, params_path: Path | str = config.DEFAULT_PARAMS):
    """The configured source (``len()`` + iteration over :class:`curate.sources.RawPair`)."""
    return SOURCES.get(params.source)(params, params_path)


def to_record(pair, policy: images.ImagePolicy) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """One raw pair -> (record, image row or None when rejected)."""
    # Cells of user datasets may hold anything; records hold strings (a non-string is rejected below).
    instruction = pair.instruction if isinstance(pair.instruction, str) else None
    edit_type = None if pair.edit_type is None else str(pair.edit_type)
    origin_key, phrases = str(pair.origin_key), [str(p) for p in pair.target_phrases]
    variants = [str(v) for v in getattr(pair, "instruction_variants", None) or []]
    if not variants and instruction:  # records schema 2: the primary instruction is always among the variants
        variants = [instruction]
    has_edited = getattr(pair, "has_edited", True)
    if pair.source is not None and (pair.edited is not None or not has_edited):
        record_id = schema.content_id(pair.source, pair.edited or b"", instruction or "")
    else:  # unreadable input: derive the id from where it came from, so it is still stable and unique
        record_id = schema.content_id(pair.origin, origin_key, pair.error or "")
    # Text Arrow cannot store (lone surrogates) is kept escaped, and the record rejected below.
    unstorable = [name for name, text in (("instruction", instruction), ("id", origin_key), ("edit_type", edit_type),
                                          ("target_phrases", "".join(phrases)),
                                          ("instruction_variants", "".join(variants))) if schema.unencodable(text)]
    if unstorable:
        instruction, origin_key = (None if instruction is None else schema.storable_text(instruction),
                                   schema.storable_text(origin_key))
        edit_type = None if edit_type is None else schema.storable_text(edit_type)
        phrases = [schema.storable_text(p) for p in phrases]
        variants = [schema.storable_text(v) for v in variants]
    record = schema.new_record(
        id=record_id, origin=pair.origin, origin_key=origin_key, has_edited=has_edited,
        instruction=instruction, edit_type=edit_type, target_phrases=phrases,
        meta=json.dumps(pair.meta, sort_keys=True, default=str),
        instruction_variants=variants,
    )
    for flag in getattr(pair, "flags", None) or []:
        schema.add_flag(record, schema.storable_text(str(flag)))
    try:
        if unstorable:
            raise images.ImageProblem("unencodable text", f"{', '.join(unstorable)} not valid Unicode (lone surrogate)")
        if pair.error:
            category, _, detail = pair.error.partition(": ")
            raise images.ImageProblem(category, detail)
        if not (instruction or "").strip():
            detail = "" if pair.instruction is None or instruction is not None else f"not text: {type(pair.instruction).__name__}"
            raise images.ImageProblem("missing instruction", detail)
        if edit_type is not None:
            if edit_type not in taxonomy.EDIT_TYPES:
                raise images.ImageProblem("unknown edit type", f"{edit_type!r}; known: {sorted(taxonomy.EDIT_TYPES)}")
            record["scope"] = taxonomy.get(edit_type).scope
        normalized = images.normalize_pair(pair.source, pair.edited, policy, has_edited=has_edited)
        record.update(width=normalized.width, height=normalized.height)
        for flag in normalized.flags:
            schema.add_flag(record, schema.storable_text(str(flag)))
        if pair.gt_mask is not None:
            record["gt_mask"] = rle.encode(_gt_mask(pair.gt_mask, normalized.width, normalized.height, policy))
            if not has_edited:  # nothing to difference: the given mask IS the mask (kept by the masks stage)
                record["mask"], record["mask_source"] = record["gt_mask"], "gt"
    except images.ImageProblem as problem:
        schema.reject(record, STAGE, problem.reason)
        return record, None
    row = {"id": record_id, "source": normalized.source, "edited": normalized.edited}
    return record, row


def _gt_mask(mask, width: int, height: int, policy: images.ImagePolicy):
    import numpy as np
    from PIL import Image

    if isinstance(mask, (bytes, bytearray)):
        return images.load_mask(bytes(mask), width, height, policy)
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != (height, width):  # the pair was downscaled: scale the mask the same way
        mask = np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).resize((width, height), Image.Resampling.NEAREST)) > 127
    return mask


# What an ingest output folder holds: an existing --out with anything else is not replaced (editkit.atomic).
OUTPUT_ENTRIES = ("records", "images")


def run_ingest(pairs: Iterable, out_dir: Path | str, params: IngestParams, total: int | None = None,
               progress: bool = True, metrics_file: Path | str | None = None) -> dict[str, Any]:
    """Ingest ``pairs`` into ``out_dir`` (records/ + images/, atomically) and return the metrics; with
    ``metrics_file`` they are written in the same atomic step as the records (timings left out)."""
    from tqdm.auto import tqdm

    policy = params.policy()
    started = time.perf_counter()
    seen: dict[str, str] = {}  # id -> origin_key of its first occurrence
    edit_types: Counter = Counter()
    rejects: Counter = Counter()
    flags: Counter = Counter()
    count = 0
    repaired = store.recover(out_dir, *([metrics_file] if metrics_file is not None else []))
    files = [Path(metrics_file)] if metrics_file is not None else []
    with store.atomic_dirs(out_dir, files=files, owns=[OUTPUT_ENTRIES]) as tmps, \
            tqdm(total=total, desc=STAGE, unit="pair", disable=not progress) as bar:
        tmp = tmps[0]
        shard_index, records = 0, []
        image_writer = store.ImageShardWriter(tmp / "images" / f"{store.shard_name(0)}.parquet")
        for pair in pairs:
            record, row = to_record(pair, policy)
            if record["id"] in seen:
                row = _mark_duplicate(record, seen)
            seen[record["id"]] = record["origin_key"]
            if row is not None:
                record["image_shard"] = store.shard_name(shard_index)
                image_writer.add(row)
                edit_types[record["edit_type"] or "unknown"] += 1
                flags.update(record["flags"])
            else:
                rejects[record["reject_reason"].split(":")[0]] += 1
            records.append(record)
            count += 1
            bar.update(1)
            if len(records) >= params.shard_size:
                store.write_records(tmp / "records", store.shard_name(shard_index), records)
                image_writer.close()
                shard_index, records = shard_index + 1, []
                image_writer = store.ImageShardWriter(tmp / "images" / f"{store.shard_name(shard_index)}.parquet")
        if records or shard_index == 0:  # always at least one shard, so an empty source is visible, not missing
            store.write_records(tmp / "records", store.shard_name(shard_index), records)
            image_writer.close()
            shard_index += 1
        metrics = {
            "source": params.source,
            "records": count,
            "ok": sum(edit_types.values()),
            "rejected": sum(rejects.values()),
            "edit_types": dict(sorted(edit_types.items())),
            "rejects": dict(sorted(rejects.items())),
            "flags": dict(sorted(flags.items())),
            "shards": shard_index,
        }
        if repaired:
            metrics["repaired"] = repaired
        if metrics_file is not None:
            store.write_metrics(tmps[1], metrics)
    return {**metrics, "seconds": round(time.perf_counter() - started, 2)}


def _mark_duplicate(record: dict[str, Any], seen: dict[str, str]) -> None:
    """Give a record whose id was seen its own id, name the first in ``meta.duplicate_of``, reject it if it was ok."""
    first = record["id"]
    occurrence = 2
    while (new_id := schema.content_id(first, f"duplicate {occurrence}")) in seen:
        occurrence += 1
    meta = json.loads(record["meta"] or "{}")
    meta["duplicate_of"] = first
    record.update(id=new_id, meta=json.dumps(meta, sort_keys=True, default=str))
    schema.reject(record, STAGE, f"duplicate: same content as {seen[first]}")
    return None


def _length(source) -> int | None:
    """The number of pairs when the source knows it without reading them (None when streaming)."""
    try:
        return len(source)
    except TypeError:
        return None


def main(
    params: Path = typer.Option(config.DEFAULT_PARAMS, "--params", help="params.yaml with the `ingest` (and `sample`) sections"),
    out: Path = typer.Option(Path("data/ingest"), "--out", help="output directory (records/ and images/ shards)"),
    metrics: Path = typer.Option(Path("metrics/ingest.json"), "--metrics", help="where to write the counts"),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="show a progress bar"),
) -> None:
    """Read edit pairs (built-in sample, a folder with pairs.jsonl, a Hugging Face dataset, or a dataset preset), validate and
    normalise the images, and write record + image shards. Bad inputs become rejected records with a reason."""
    try:  # a bad setting, split, column or path is the user's to fix: one line, exit code 2, no traceback
        cfg = config.load_section(IngestParams, STAGE, params)
        source = open_source(cfg, params)
    except (ValueError, FileNotFoundError) as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(2) from None
    # the metrics are committed with the records, in one atomic step (without the timings: identical across reruns)
    result = run_ingest(source, out, cfg, total=_length(source), progress=progress, metrics_file=metrics)
    typer.echo(f"ingest: {result['ok']} ok, {result['rejected']} rejected of {result['records']} -> {out}")
    for reason, n in result["rejects"].items():
        typer.echo(f"  rejected {n:6d}  {reason}")

