"""The `export` stage: the selected records as a Hugging Face `datasets` dataset with a dataset card.

Reads ``data/select/records`` (+ the images from ``data/ingest/images``, the funnel from ``metrics/select.json`` and
``plots/funnel.png``) and writes ``data/export/dataset`` (``save_to_disk``; load it with
``datasets.load_from_disk``), ``data/export/README.md`` (the card: counts per edit type, the funnel, the plot, the
licences, the leak check), ``data/export/rejects.parquet`` (rows dropped here, with the reason) and
``metrics/export.json``. Images are embedded (``Image`` feature) so the dataset is self-contained; masks are COCO RLE
(``mask``: size + counts, 1 = pixels that should change) and, optionally, a PNG ``mask_image`` (255 = change);
scores are flattened to ``score_<name>`` columns. The columns are :mod:`editkit.export_columns` (the trainer reads
the same contract): provenance (dataset, split, origin_key, instruction variants, flags, meta, licence), the dataset's
own mask (``gt_mask``) beside the mask the row carries, and ``mask_source`` (reviewed / shipped / fused / derived).

Before anything is written:

* **Benchmark leaks**: every row whose source or edited image is a near-duplicate (pHash, ``select.dedupe``'s
  threshold) of an item of a built benchmark (``export.leak_check.benchmarks``) is dropped, with its reason in the
  rejects table (:mod:`curate.scoring.leaks`).
* **Licences**: rows whose licence is non-commercial or no-derivatives stop the export with a one-line error naming
  the licence and the datasets, unless ``export.allow_licences`` lists it; rows without licence information are
  exported as ``unknown`` and flagged (``licence_unknown``).
"""
from __future__ import annotations

import json
import shutil
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Iterator, Literal, Optional

import numpy as np
import typer

from editkit import export_columns as columns
from editkit.config_meta import Range
from editkit.errors import UserError

STAGE = "export"
TEXT_COLUMNS = columns.TEXT_COLUMNS
REJECTS_FILE = "rejects.parquet"


class LicenceRefused(UserError):
    """A training export holding rows whose licence forbids it (non-commercial / no-derivatives)."""


@dataclass
class LeakCheckParams:
    enabled: bool = True
    """drop training rows whose source or edited image is a near-duplicate of a benchmark item"""
    benchmarks: list[str] = field(default_factory=lambda: ["data/bench"])
    """built benchmarks (outputs of editkit bench build: records/ + images/) or folders holding them"""
    max_hamming: Annotated[Optional[int], Range(ge=0, le=64)] = None
    """pHash bits for a near-duplicate; null = select.dedupe.max_hamming (the threshold select uses)"""


@dataclass
class ExportParams:
    format: Literal["save_to_disk"] = "save_to_disk"
    """the only format: Arrow shards + dataset_info (datasets.load_from_disk)"""
    mask_png: bool = True
    """also store each mask as a PNG Image column (viewer-friendly; RLE is canonical)"""
    max_shard_size: str = "500MB"
    """largest Arrow shard written, e.g. 500MB"""
    allow_licences: list[str] = field(default_factory=list)
    """non-commercial or no-derivatives licences you accept in the training set (as the card names them, e.g. "CC BY-NC
    4.0"); any other such licence stops the export"""
    leak_check: LeakCheckParams = field(default_factory=LeakCheckParams)
    """benchmark leak check: near-duplicates of benchmark items are dropped"""


def features(score_names: list[str], mask_png: bool):
    from datasets import Features, Image, List, Value

    rle = {"size": List(Value("int32")), "counts": Value("string")}
    feats: dict[str, Any] = {name: Value("string") for name in TEXT_COLUMNS}
    feats.update({name: List(Value("string")) for name in columns.LIST_COLUMNS})
    feats.update({name: Image() for name in columns.IMAGE_COLUMNS})
    feats.update({name: rle for name in columns.RLE_COLUMNS})
    if mask_png:
        feats[columns.MASK_IMAGE] = Image()
    feats.update({f"{columns.SCORE_PREFIX}{name}": Value("float64") for name in score_names})
    return Features(feats)


@dataclass
class Scan:
    """Pass 1 over the selected records' compact columns."""

    score_names: list[str]
    by_type: Counter
    ids: list[str]
    edit_types: list[str]
    datasets: list[str]
    licences: list[str]
    mask_sources: list[str]
    source_hash: np.ndarray
    edited_hash: np.ndarray
    has_edited: np.ndarray


def scan(records_dir: Path, images_dir: Path | None = None) -> Scan:
    """Pass 1 (compact columns only): score names, counts per edit type, licences, datasets and pHashes of the
    selected records (a record without pHashes, not scored, is hashed here from its images)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from editkit import schema, store

    wanted = ["id", "status", "edit_type", "scores", "origin", "meta", "phash", "has_edited", "mask_source",
              "review_status"]
    names: set[str] = set()
    out = Scan([], Counter(), [], [], [], [], [], np.zeros(0), np.zeros(0), np.zeros(0))
    sources, edits, has_edited = [], [], []
    images = store.ImageStore(images_dir) if images_dir is not None else None
    for shard in store.list_shards(records_dir):
        path = Path(records_dir) / f"{shard}.parquet"
        present = set(pq.read_schema(path).names)
        table = pq.read_table(path, columns=[c for c in wanted if c in present])
        table = table.filter(pc.equal(table["status"], schema.STATUS_OK))
        if not table.num_rows:
            continue
        names.update(pc.unique(table["scores"].combine_chunks().keys).to_pylist())
        column = {name: table[name].to_pylist() for name in ("id", "edit_type", "origin", "meta", "mask_source",
                                                            "review_status", "has_edited") if name in present}
        hashes, valid = {}, {}
        for role in ("source", "edited"):  # uint64 exactly (a null would turn a numpy column into float64)
            field_ = pc.struct_field(table["phash"], role) if "phash" in present else pa.nulls(table.num_rows, pa.uint64())
            valid[role] = pc.is_valid(field_).to_numpy(zero_copy_only=False)
            hashes[role] = pc.fill_null(field_, 0).to_numpy(zero_copy_only=False).astype(np.uint64)
        for i, rid in enumerate(column["id"]):
            record = {name: values[i] for name, values in column.items()}
            meta = columns.parse_meta(record.get("meta"))
            out.ids.append(rid)
            out.edit_types.append(record.get("edit_type") or "unknown")
            out.datasets.append(columns.dataset_name(record, meta))
            out.licences.append(columns.licence_of(record, meta))
            out.mask_sources.append(columns.mask_provenance(record.get("mask_source"), record.get("review_status")))
            source, edited = int(hashes["source"][i]), int(hashes["edited"][i])
            has = record.get("has_edited") is not False and bool(valid["edited"][i])
            if not valid["source"][i]:  # not scored (no pHashes): hash the images here
                computed = _hash_images(images, shard, rid) if images is not None else {}
                source, edited = computed.get("source") or 0, computed.get("edited")
                has = edited is not None
            sources.append(source)
            edits.append(edited if has else 0)
            has_edited.append(has)
    out.by_type = Counter(out.edit_types)
    out.score_names = sorted(names)
    out.source_hash = np.asarray(sources, dtype=np.uint64)
    out.edited_hash = np.asarray(edits, dtype=np.uint64)
    out.has_edited = np.asarray(has_edited, dtype=bool)
    return out


def _hash_images(images: Any, shard: str, record_id: str) -> dict[str, int | None]:
    from curate.scoring.phash import phash

    from editkit import store

    image_shard = images.shard(shard)
    edited = image_shard.edited_bytes(record_id)
    return {"source": phash(store.decode_rgb(image_shard.source_bytes(record_id))),
            "edited": None if edited is None else phash(store.decode_rgb(edited))}


def licence_report(found: Scan, keep: np.ndarray, allowed: list[str]) -> dict[str, dict[str, Any]]:
    """Licence -> rows, datasets, restrictions (non-commercial / no-derivatives) and whether it is allowed."""
    allowed_keys = {columns.licence_key(name) for name in allowed}
    report: dict[str, dict[str, Any]] = {}
    for licence, dataset, kept in zip(found.licences, found.datasets, keep):
        if not kept:
            continue
        entry = report.setdefault(licence, {"rows": 0, "datasets": Counter(),
                                            "restrictions": columns.licence_restrictions(licence)})
        entry["rows"] += 1
        entry["datasets"][dataset] += 1
    for licence, entry in report.items():
        entry["datasets"] = dict(sorted(entry["datasets"].items()))
        entry["allowed"] = not entry["restrictions"] or columns.licence_key(licence) in allowed_keys
    return dict(sorted(report.items()))


def check_licences(report: dict[str, dict[str, Any]]) -> None:
    """Refuse (one line) a training export holding a restricted licence that ``export.allow_licences`` lacks."""
    refused = [(name, entry) for name, entry in report.items() if not entry["allowed"]]
    if not refused:
        return
    name, entry = refused[0]
    more = f" (and {len(refused) - 1} more refused licence(s): {', '.join(n for n, _ in refused[1:])})" \
        if len(refused) > 1 else ""
    raise LicenceRefused(
        f"export: licence {name!r} ({' and '.join(entry['restrictions'])}) of {entry['rows']} row(s) from "
        f"{', '.join(entry['datasets'])} is not allowed in a training set; add it to export.allow_licences in "
        f"params.yaml to export anyway{more}")


def rows(records_dir: Path, images_dir: Path, score_names: list[str], mask_png: bool,
         dropped: tuple[str, ...] = ()) -> Iterator[dict[str, Any]]:
    """One dataset row per selected record (the dropped ids left out), streaming shard by shard."""
    from editkit import rle, schema, store

    skip = set(dropped)
    images = store.ImageStore(images_dir)
    for _, records in store.iter_records(records_dir):
        for record in records:
            if not schema.is_ok(record) or record["id"] in skip:
                continue
            shard = images.shard(record["image_shard"])
            yield row_of(record, shard, score_names, mask_png, rle, store)


def row_of(record: dict[str, Any], shard: Any, score_names: list[str], mask_png: bool, rle: Any,
           store: Any) -> dict[str, Any]:
    licence = columns.licence_of(record)
    flags = list(record.get("flags") or [])
    if licence == columns.UNKNOWN_LICENCE:
        flags.append("licence_unknown")
    flags += [f"licence_{r.replace('-', '_')}" for r in columns.licence_restrictions(licence)]
    row = {name: record.get(name) for name in TEXT_COLUMNS}
    row.update({
        columns.DATASET: columns.dataset_name(record), columns.SPLIT: columns.split_name(record),
        columns.LICENCE: licence, columns.MASK_METHOD: record.get("mask_source"),
        columns.MASK_SOURCE: columns.mask_provenance(record.get("mask_source"), record.get("review_status")),
        columns.TARGET_PHRASES: list(record.get("target_phrases") or []),
        columns.INSTRUCTION_VARIANTS: list(record.get("instruction_variants") or []),
        columns.FLAGS: flags,
    })
    row[columns.SOURCE_IMAGE] = {"bytes": shard.source_bytes(record["id"]), "path": None}
    edited = shard.edited_bytes(record["id"])  # None for prompt sets (has_edited False, e.g. CoCoEdit-40K)
    row[columns.EDITED_IMAGE] = None if edited is None else {"bytes": edited, "path": None}
    row[columns.MASK] = record["mask"]
    row[columns.SHIPPED_MASK] = record.get("gt_mask") if _shipped(record) else None
    if mask_png:
        png = None if record["mask"] is None else store.encode_png(rle.decode(record["mask"]).astype("uint8") * 255)
        row[columns.MASK_IMAGE] = None if png is None else {"bytes": png, "path": None}
    scores = record.get("scores") or {}
    row.update({f"{columns.SCORE_PREFIX}{name}": scores.get(name) for name in score_names})
    return row


def _shipped(record: dict[str, Any]) -> bool:
    from curate.stages.masks import has_shipped_mask

    return has_shipped_mask(record)


def build_dataset(records_dir: Path, images_dir: Path, params: ExportParams, work_dir: Path,
                  score_names: list[str], dropped: tuple[str, ...], total: int):
    from datasets import Dataset

    feats = features(score_names, params.mask_png)
    if not total:
        return Dataset.from_dict({name: [] for name in feats}, features=feats)
    return Dataset.from_generator(
        rows, features=feats, cache_dir=str(work_dir),
        # tuples, not lists: datasets shards list-valued gen_kwargs across generator calls
        gen_kwargs={"records_dir": records_dir, "images_dir": images_dir, "score_names": tuple(score_names),
                    "mask_png": params.mask_png, "dropped": dropped})


def leak_check(params: LeakCheckParams, found: Scan, max_hamming: int) -> tuple[dict[str, str], dict[str, Any]]:
    """``id -> reason`` of the rows that leak a benchmark, and the facts for the metrics and the card."""
    from curate.scoring import leaks

    if not params.enabled:
        return {}, {"enabled": False}
    bench = leaks.benchmark_hashes(params.benchmarks)
    dropped = leaks.find_leaks(found.ids, found.source_hash, found.edited_hash, found.has_edited, bench, max_hamming)
    by_bench = Counter(leaks.leak_benchmark(reason) for reason in dropped.values())
    facts = {"enabled": True, "max_hamming": max_hamming, "benchmarks": dict(sorted(bench.items.items())),
             "items_checked": len(bench.hashes), "not_found": bench.missing,
             "unreadable_items": dict(sorted(bench.unreadable.items())), "dropped": len(dropped),
             "dropped_by_benchmark": dict(sorted(by_bench.items()))}
    return dropped, facts


# What an export folder holds: an existing --out with anything else is not replaced (editkit.atomic).
OUTPUT_ENTRIES = ("dataset", "README.md", "funnel.png", REJECTS_FILE)
DEFAULT_MAX_HAMMING = 4  # select.dedupe.max_hamming's default, when run() is called without one


def run(params: ExportParams, records_dir: Path, images_dir: Path, output_dir: Path, select_metrics: Path,
        funnel_png: Path, metrics_file: Path | None = None, max_hamming: int | None = None) -> dict[str, Any]:
    """Export and return the metrics; with ``metrics_file`` they are written in the same atomic step as the
    dataset. ``max_hamming``: the near-duplicate threshold of select (``export.leak_check.max_hamming`` wins)."""
    from editkit import schema_versions, store

    if params.format != "save_to_disk":
        raise ValueError(f"export.format {params.format!r} is not implemented; use save_to_disk")
    started = time.perf_counter()
    repaired = store.recover_input(records_dir) + store.recover_input(images_dir) + store.recover(select_metrics)
    repaired += store.recover(output_dir, *([metrics_file] if metrics_file is not None else []))
    funnel = json.loads(select_metrics.read_text()) if select_metrics.exists() else {}
    found = scan(records_dir, images_dir)
    threshold = params.leak_check.max_hamming
    threshold = threshold if threshold is not None else (max_hamming if max_hamming is not None else
                                                         DEFAULT_MAX_HAMMING)
    dropped, leak_facts = leak_check(params.leak_check, found, threshold)
    keep = np.asarray([rid not in dropped for rid in found.ids], dtype=bool)
    licences = licence_report(found, keep, params.allow_licences)
    check_licences(licences)  # before anything is written
    by_type = Counter(t for t, k in zip(found.edit_types, keep) if k)
    mask_sources = Counter(m for m, k in zip(found.mask_sources, keep) if k)
    dropped_types = {rid: t for rid, t in zip(found.ids, found.edit_types) if rid in dropped}
    files = [Path(metrics_file)] if metrics_file is not None else []
    with store.atomic_dirs(output_dir, files=files, owns=[OUTPUT_ENTRIES]) as tmps:
        tmp = tmps[0]
        work = tmp / ".build-cache"
        total = int(keep.sum())
        dataset = build_dataset(records_dir, images_dir, params, work, found.score_names,
                                tuple(sorted(dropped)), total)
        dataset.save_to_disk(str(tmp / "dataset"), max_shard_size=params.max_shard_size)
        schema_versions.write_export_stamp(tmp / "dataset")  # the export's schema version, beside dataset_info.json
        del dataset
        shutil.rmtree(work, ignore_errors=True)
        write_rejects(tmp / REJECTS_FILE, dropped, dropped_types)
        if funnel_png.exists():
            shutil.copyfile(funnel_png, tmp / "funnel.png")
        size = sum(p.stat().st_size for p in (tmp / "dataset").rglob("*") if p.is_file())
        unknown = licences.get(columns.UNKNOWN_LICENCE, {})
        metrics = {
            "rows": total,
            "by_edit_type": dict(sorted(by_type.items())),
            "by_dataset": dict(sorted(Counter(d for d, k in zip(found.datasets, keep) if k).items())),
            "mask_source": dict(sorted(mask_sources.items())),
            "score_columns": [f"{columns.SCORE_PREFIX}{n}" for n in found.score_names],
            "mask_png": params.mask_png,
            "licences": licences,
            "licence_flagged": {name: entry["restrictions"] for name, entry in licences.items()
                                if entry["restrictions"]},
            "licence_unknown_rows": unknown.get("rows", 0),
            "leak_check": leak_facts,
            "dropped": len(dropped),
            "dropped_by_reason": dict(sorted(Counter(_reason_kind(r) for r in dropped.values()).items())),
            "rejects_path": str(output_dir / REJECTS_FILE),
            "dataset_path": str(output_dir / "dataset"),
            "card_path": str(output_dir / "README.md"),
            "dataset_mb": round(size / 2**20, 2),
        }
        if repaired:
            metrics["repaired"] = repaired
        write_card(tmp / "README.md", metrics, funnel, has_plot=(tmp / "funnel.png").exists())
        if metrics_file is not None:
            store.write_metrics(tmps[1], metrics)
    metrics["seconds"] = round(time.perf_counter() - started, 3)
    return metrics


def _reason_kind(reason: str) -> str:
    """A drop reason without its per-row details (for counts): ``benchmark leak: <benchmark>``."""
    from curate.scoring.leaks import leak_benchmark

    return f"benchmark leak: {leak_benchmark(reason)}" if reason.startswith("benchmark leak") else reason


def write_rejects(path: Path, dropped: dict[str, str], edit_types: dict[str, str]) -> None:
    """The rows dropped here, in the rejects table's columns (id, stage, reason, edit_type), like select's."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from curate.scoring.selection import REJECTS_SCHEMA

    ids = sorted(dropped)
    table = pa.table({"id": ids, "stage": [STAGE] * len(ids), "reason": [dropped[i] for i in ids],
                      "edit_type": [edit_types.get(i) for i in ids]}, schema=REJECTS_SCHEMA)
    pq.write_table(table, path, compression="zstd")


def write_card(path: Path, metrics: dict[str, Any], select: dict[str, Any], has_plot: bool) -> None:
    """The dataset card (README.md with the Hub's YAML header): what is inside, counts, the funnel, provenance,
    licences, the benchmark leak check, how to load and how to trace a row back."""
    from editkit import store

    licences = metrics.get("licences") or {}
    lines = ["---", "pretty_name: editkit content-consistent edit pairs", "task_categories:", "- image-to-image",
             "tags:", "- image-editing", "- edit-masks", "license: other", "---", "",
             "# Content-consistent instruction-editing pairs with edit masks", "",
             f"{metrics['rows']} (source image, instruction, edited image) pairs, each with a mask of the pixels that "
             "should change, curated by `editkit` (`dvc repro`: ingest -> rewrite -> masks -> score -> select -> "
             "export).", "", "## Load", "", "```python", "from datasets import load_from_disk",
             "ds = load_from_disk(\"dataset\")  # relative to this folder",
             "from pycocotools import mask as M  # ds[0]['mask'] is COCO RLE: 1 = edit region", "```", "",
             "## Rows per edit type", "", "| edit type | rows |", "|---|---:|"]
    lines += [f"| {name} | {count} |" for name, count in metrics["by_edit_type"].items()]
    lines += [f"| **total** | **{metrics['rows']}** |", ""]
    if metrics.get("by_dataset"):
        lines += ["## Rows per source dataset", "", "| dataset | rows |", "|---|---:|"]
        lines += [f"| {name} | {count} |" for name, count in metrics["by_dataset"].items()]
        lines.append("")
    if metrics.get("mask_source"):
        lines += ["## Masks", "", "Which mask each row carries (`mask_source`; precedence reviewed > shipped > "
                  "derived): " + ", ".join(f"{k} {v}" for k, v in metrics["mask_source"].items()) + ".", ""]
    lines += ["## Licences", "",
              "Each row's licence is its source dataset's (`licence` column). Check every licence before you use or "
              "publish this set.", "", "| licence | rows | datasets | restrictions |", "|---|---:|---|---|"]
    for name, entry in licences.items():
        restricted = ", ".join(entry["restrictions"]) or "none known"
        if entry["restrictions"]:
            restricted = f"**{restricted}** (allowed by export.allow_licences)"
        if name == columns.UNKNOWN_LICENCE:
            restricted = "**unknown: the source did not say** (rows flagged `licence_unknown`)"
        sets = ", ".join(f"{d} ({c})" for d, c in entry["datasets"].items())
        lines.append(f"| {name} | {entry['rows']} | {sets} | {restricted} |")
    lines.append("")
    lines += _leak_lines(metrics.get("leak_check") or {})
    funnel = select.get("funnel") or []
    if funnel:
        lines += ["## Selection funnel", "",
                  f"{select.get('records_in')} candidates; each rejected record is counted at the first step that "
                  f"rejected it (target size {select.get('target_size')}, seed {select.get('seed')}).", "",
                  "| step | rejected | remaining | rejected by edit type |", "|---|---:|---:|---|"]
        for row in funnel:
            split = ", ".join(f"{k}: {v}" for k, v in sorted(row["by_edit_type"].items()))
            lines.append(f"| {row['filter']} | {row['rejected']} | {row['remaining']} | {split} |")
        lines.append("")
        if select.get("skipped_filters"):
            lines += [f"Filters skipped because no record has their score: {', '.join(select['skipped_filters'])} "
                      "(CLIP scores are off unless `score.clip` points at local weights).", ""]
        if select.get("warning"):
            lines += [f"Warning from selection: {select['warning']}.", ""]
    if has_plot:
        lines += ["![selection funnel](funnel.png)", ""]
    lines += ["## Columns", "",
              "- `source_image`, `edited_image`: the pair (embedded bytes, `datasets.Image`).",
              "- `instruction` (as given) and `instruction_refined` (MLLM rewrite, or the same text when off), "
              "`instruction_variants` (every instruction the dataset ships), `edit_type`, `scope` (local/global), "
              "`target_phrases`.",
              "- `mask`: COCO compressed RLE `{size: [h, w], counts}`; **1 = pixels that should change**. "
              + ("`mask_image`: the same mask as a PNG (255 = change). " if metrics["mask_png"] else "")
              + "`mask_source`: reviewed / shipped / fused / derived (`mask_method`: how it was made: gt, diff, "
              "grounded, fused, human, whole, gt_fused). `gt_mask`: the dataset's own mask as shipped (RLE), also "
              "when the row carries another.",
              "- `score_*`: " + (", ".join(f"`{c}`" for c in metrics["score_columns"]) or "none") + ". "
              "`score_bg_psnr`/`score_bg_ssim` measure source vs edited on the NON-edited region only "
              "(absent for whole-image edits); `score_shipped_derived_iou` compares a shipped mask with the "
              "pipeline's own.",
              "- Provenance: `dataset`, `split`, `origin_key`, `origin`, `licence`, `flags`, `review_status`, `meta` "
              "(the source's own fields, JSON).", "",
              "## Trace a row back", "",
              "`dataset` + `split` + `origin_key` name the source row: the row key in the dataset (for hub datasets "
              "its id column, else `row <index>` of the split; for folders the `id` or line of `pairs.jsonl`). "
              "`meta` holds what the source recorded about the row (paths, line numbers, the dataset's own edit "
              "type). `id` is the pipeline's content id: the same row in `data/*/records` and in the rejects tables "
              "(`data/rejects/rejects.parquet`, and `rejects.parquet` here for rows this export dropped).", ""]
    store.atomic_write_text(path, "\n".join(lines))


def _leak_lines(leak: dict[str, Any]) -> list[str]:
    lines = ["## Benchmark leak check", ""]
    if not leak.get("enabled"):
        return lines + ["**Off** (`export.leak_check.enabled: false`): rows were not checked against benchmarks.", ""]
    checked = ", ".join(f"{name} ({count} items)" for name, count in leak.get("benchmarks", {}).items())
    lines.append(f"Every row's source and edited image was compared with the source image of each benchmark item "
                 f"(64-bit pHash, near-duplicate within {leak.get('max_hamming')} bits): "
                 f"{checked or '**no built benchmark found: nothing was checked**'}.")
    if leak.get("not_found"):
        lines.append(f"Not built, so not checked: {', '.join(leak['not_found'])}.")
    if leak.get("unreadable_items"):
        lines.append("Benchmark items without a readable image (not checked): "
                     + ", ".join(f"{k} {v}" for k, v in leak["unreadable_items"].items()) + ".")
    dropped = leak.get("dropped_by_benchmark") or {}
    lines.append(f"Rows dropped as near-duplicates of a benchmark item: {leak.get('dropped', 0)}"
                 + (" (" + ", ".join(f"{k} {v}" for k, v in dropped.items()) + ")" if dropped else "")
                 + "; each is listed with its reason in `rejects.parquet`.")
    return lines + [""]


def main(
    params_file: Path = typer.Option(Path("params.yaml"), "--params", help="params file (section `export`)"),
    input_dir: Path = typer.Option(Path("data/select/records"), "--input", help="records written by select"),
    images_dir: Path = typer.Option(Path("data/ingest/images"), "--images", help="image shards written by ingest"),
    output_dir: Path = typer.Option(Path("data/export"), "--out",
                                    help="dataset/ + README.md (card) + funnel.png + rejects.parquet"),
    select_metrics: Path = typer.Option(Path("metrics/select.json"), help="the funnel, for the card"),
    funnel_png: Path = typer.Option(Path("plots/funnel.png"), help="the funnel plot, embedded in the card"),
    metrics_file: Path = typer.Option(Path("metrics/export.json"), "--metrics", help="rows per edit type (JSON)"),
) -> None:
    """Export the selected records as a `datasets` dataset (images embedded, RLE + PNG masks) with a dataset card.

    Rows that are near-duplicates of a built benchmark's items are dropped (export.leak_check); a non-commercial or
    no-derivatives licence stops the export unless export.allow_licences lists it. Load the result with
    `datasets.load_from_disk("data/export/dataset")`; the card is data/export/README.md.
    """
    from editkit import config

    from curate.stages.select import SelectParams

    params = config.load_section(ExportParams, STAGE, params_file)
    select = config.load_section(SelectParams, "select", params_file)  # the near-duplicate threshold select uses
    # the metrics are committed with the dataset (one atomic step)
    metrics = run(params, input_dir, images_dir, output_dir, select_metrics, funnel_png, metrics_file=metrics_file,
                  max_hamming=select.dedupe.max_hamming)
    leak = metrics["leak_check"]
    typer.echo(f"export: {metrics['rows']} rows {metrics['by_edit_type']} -> {metrics['dataset_path']} "
               f"(load with datasets.load_from_disk); card {metrics['card_path']}; "
               + (f"benchmark leaks dropped {leak['dropped']} (checked {leak['items_checked']} items)"
                  if leak.get("enabled") else "benchmark leak check off")
               + (f"; licences flagged {metrics['licence_flagged']}" if metrics["licence_flagged"] else "")
               + (f"; {metrics['licence_unknown_rows']} rows with unknown licence" if metrics["licence_unknown_rows"]
                  else ""))
