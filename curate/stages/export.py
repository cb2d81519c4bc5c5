"""The `export` stage: the selected records as a Hugging Face `datasets` dataset with a dataset card.

Reads ``data/select/records`` (+ the images from ``data/ingest/images``, the funnel from ``metrics/select.json`` and
``plots/funnel.png``) and writes ``data/export/dataset`` (``save_to_disk``; load it with
``datasets.load_from_disk``), ``data/export/README.md`` (the card: counts per edit type, the funnel, the plot) and
``metrics/export.json``. Images are embedded (``Image`` feature) so the dataset is self-contained; masks are COCO RLE
(``mask``: size + counts, 1 = pixels that should change) and, optionally, a PNG ``mask_image`` (255 = change);
scores are flattened to ``score_<name>`` columns.
"""
from __future__ import annotations

import json
import shutil
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Iterator, Literal

import typer
from editkit.config_meta import Help

STAGE = "export"
TEXT_COLUMNS = ("id", "origin", "instruction", "instruction_refined", "edit_type", "scope", "mask_source")


@dataclass
class ExportParams:
    format: Annotated[
        Literal["save_to_disk"],
        Help("the only format: Arrow shards + dataset_info (datasets.load_from_disk)"),
    ] = "save_to_disk"
    mask_png: Annotated[
        bool,
        Help("also store each mask as a PNG Image column (viewer-friendly; RLE is canonical)"),
    ] = True
    max_shard_size: Annotated[str, Help("largest Arrow shard written, e.g. 500MB")] = "500MB"


def features(score_names: list[str], mask_png: bool):
    from datasets import Features, Image, List, Value

    columns: dict[str, Any] = {name: Value("string") for name in TEXT_COLUMNS}
    columns["target_phrases"] = List(Value("string"))
    columns["source_image"] = Image()
    columns["edited_image"] = Image()
    columns["mask"] = {"size": List(Value("int32")), "counts": Value("string")}
    if mask_png:
        columns["mask_image"] = Image()
    columns.update({f"score_{name}": Value("float64") for name in score_names})
    return Features(columns)


def selected_score_names(records_dir: Path) -> tuple[list[str], Counter]:
    """Pass 1 (compact columns only): score names present and counts per edit type over the selected records."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from editkit import schema, store

    names: set[str] = set()
    by_type: Counter = Counter()
    for shard in store.list_shards(records_dir):
        table = pq.read_table(Path(records_dir) / f"{shard}.parquet", columns=["status", "edit_type", "scores"])
        table = table.filter(pc.equal(table["status"], schema.STATUS_OK))
        by_type.update(t or "unknown" for t in table["edit_type"].to_pylist())
        if table.num_rows:
            names.update(pc.unique(table["scores"].combine_chunks().keys).to_pylist())
    return sorted(names), by_type


def rows(records_dir: Path, images_dir: Path, score_names: list[str], mask_png: bool) -> Iterator[dict[str, Any]]:
    """One dataset row per selected record, streaming shard by shard."""
    from editkit import rle, schema, store

    images = store.ImageStore(images_dir)
    for _, records in store.iter_records(records_dir):
        for record in records:
            if not schema.is_ok(record):
                continue
            shard = images.shard(record["image_shard"])
            row = {name: record.get(name) for name in TEXT_COLUMNS}
            row["target_phrases"] = list(record.get("target_phrases") or [])
            row["source_image"] = {"bytes": shard.source_bytes(record["id"]), "path": None}
            edited = shard.edited_bytes(record["id"])  # None for prompt sets (has_edited False, e.g. CoCoEdit-40K)
            row["edited_image"] = None if edited is None else {"bytes": edited, "path": None}
            row["mask"] = record["mask"]
            if mask_png:
                png = None if record["mask"] is None else store.encode_png(rle.decode(record["mask"]).astype("uint8") * 255)
                row["mask_image"] = None if png is None else {"bytes": png, "path": None}
            scores = record.get("scores") or {}
            row.update({f"score_{name}": scores.get(name) for name in score_names})
            yield row


def build_dataset(records_dir: Path, images_dir: Path, params: ExportParams, work_dir: Path):
    from datasets import Dataset

    score_names, by_type = selected_score_names(records_dir)
    feats = features(score_names, params.mask_png)
    if not sum(by_type.values()):
        return Dataset.from_dict({name: [] for name in feats}, features=feats), by_type, score_names
    dataset = Dataset.from_generator(
        rows, features=feats, cache_dir=str(work_dir),
        # a tuple, not a list: datasets shards list-valued gen_kwargs across generator calls
        gen_kwargs={"records_dir": records_dir, "images_dir": images_dir, "score_names": tuple(score_names),
                    "mask_png": params.mask_png})
    return dataset, by_type, score_names


# What an export folder holds: an existing --out with anything else is not replaced (editkit.atomic).
OUTPUT_ENTRIES = ("dataset", "README.md", "funnel.png")


def run(params: ExportParams, records_dir: Path, images_dir: Path, output_dir: Path, select_metrics: Path,
        funnel_png: Path, metrics_file: Path | None = None) -> dict[str, Any]:
    """Export and return the metrics; with ``metrics_file`` they are written in the same atomic step as the
    dataset."""
    from editkit import schema_versions, store

    if params.format != "save_to_disk":
        raise ValueError(f"export.format {params.format!r} is not implemented; use save_to_disk")
    started = time.perf_counter()
    repaired = store.recover_input(records_dir) + store.recover_input(images_dir) + store.recover(select_metrics)
    repaired += store.recover(output_dir, *([metrics_file] if metrics_file is not None else []))
    funnel = json.loads(select_metrics.read_text()) if select_metrics.exists() else {}
    files = [Path(metrics_file)] if metrics_file is not None else []
    with store.atomic_dirs(output_dir, files=files, owns=[OUTPUT_ENTRIES]) as tmps:
        tmp = tmps[0]
        work = tmp / ".build-cache"
        dataset, by_type, score_names = build_dataset(records_dir, images_dir, params, work)
        dataset.save_to_disk(str(tmp / "dataset"), max_shard_size=params.max_shard_size)
        schema_versions.write_export_stamp(tmp / "dataset")  # the export's schema version, beside dataset_info.json
        del dataset
        shutil.rmtree(work, ignore_errors=True)
        if funnel_png.exists():
            shutil.copyfile(funnel_png, tmp / "funnel.png")
        size = sum(p.stat().st_size for p in (tmp / "dataset").rglob("*") if p.is_file())
        metrics = {
            "rows": int(sum(by_type.values())),
            "by_edit_type": dict(sorted(by_type.items())),
            "score_columns": [f"score_{n}" for n in score_names],
            "mask_png": params.mask_png,
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


def write_card(path: Path, metrics: dict[str, Any], select: dict[str, Any], has_plot: bool) -> None:
    """The dataset card (README.md with the Hub's YAML header): what is inside, counts, the funnel, how to load."""
    from editkit import store

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
              "`edit_type`, `scope` (local/global), `target_phrases`.",
              "- `mask`: COCO compressed RLE `{size: [h, w], counts}`; **1 = pixels that should change**. "
              + ("`mask_image`: the same mask as a PNG (255 = change). " if metrics["mask_png"] else "")
              + "`mask_source`: gt / diff / grounded / fused / human / whole.",
              "- `score_*`: " + (", ".join(f"`{c}`" for c in metrics["score_columns"]) or "none") + ". "
              "`score_bg_psnr`/`score_bg_ssim` measure source vs edited on the NON-edited region only "
              "(absent for whole-image edits).", ""]
    store.atomic_write_text(path, "\n".join(lines))


def main(
    params_file: Path = typer.Option(Path("params.yaml"), "--params", help="params file (section `export`)"),
    input_dir: Path = typer.Option(Path("data/select/records"), "--input", help="records written by select"),
    images_dir: Path = typer.Option(Path("data/ingest/images"), "--images", help="image shards written by ingest"),
    output_dir: Path = typer.Option(Path("data/export"), "--out", help="dataset/ + README.md (card) + funnel.png"),
    select_metrics: Path = typer.Option(Path("metrics/select.json"), help="the funnel, for the card"),
    funnel_png: Path = typer.Option(Path("plots/funnel.png"), help="the funnel plot, embedded in the card"),
    metrics_file: Path = typer.Option(Path("metrics/export.json"), "--metrics", help="rows per edit type (JSON)"),
) -> None:
    """Export the selected records as a `datasets` dataset (images embedded, RLE + PNG masks) with a dataset card.

    Load it with `datasets.load_from_disk("data/export/dataset")`; the card is data/export/README.md.
    """
    from editkit import config

    params = config.load_section(ExportParams, STAGE, params_file)
    # the metrics are committed with the dataset (one atomic step)
    metrics = run(params, input_dir, images_dir, output_dir, select_metrics, funnel_png, metrics_file=metrics_file)
    typer.echo(f"export: {metrics['rows']} rows {metrics['by_edit_type']} -> {metrics['dataset_path']} "
               f"(load with datasets.load_from_disk); card {metrics['card_path']}")
