"""``report.html`` of a benchmark run: the aggregate tables on top, then one row per item (source, edit mask over the
source, the run's output and the baseline's, the masked metrics and judge scores), sortable by any metric column.

The page is one self-contained file in the run folder (data inline, vanilla JS, nothing fetched from the network)
beside its thumbnails (``thumbs/``, content-hashed by :mod:`editkit.thumbs`, so a rerun draws only what changed and
the folder can be copied anywhere). The source images and masks come from the built benchmark the run scored
(``report["bench_data"]``); when it is not there any more the page shows the outputs and scores only.
"""
from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

from editkit import rle, store, thumbs
from editkit.scores import finite_or_none

TEMPLATE = Path(__file__).with_name("report_template.html")


def _items(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / "items.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


_finite = finite_or_none


def _output_thumb(out: thumbs.ThumbDir, run_dir: Path, record_id: str, name: str) -> str | None:
    path = run_dir / "outputs" / f"{record_id}.png"
    if not path.is_file():
        return None
    data = path.read_bytes()
    key = thumbs.digest(name, data)
    return out.put(key, None if out.has(key) else thumbs.shrink(data))


def _bench_thumbs(out: thumbs.ThumbDir, bench_dir: Path | None, wanted: set[str]) -> dict[str, dict[str, Any]]:
    """Per item id: ``instruction`` and the ``source`` / ``mask`` thumbnails, read one benchmark shard at a time."""
    from benchmarks import items as bench_items

    found: dict[str, dict[str, Any]] = {}
    if bench_dir is None or not (bench_dir / "records").is_dir():
        return found
    for _, records, images in bench_items.iter_benchmark(bench_dir):
        for record in records:
            if record["id"] not in wanted:
                continue
            entry: dict[str, Any] = {"instruction": record.get("instruction_refined") or record.get("instruction")}
            found[record["id"]] = entry
            if record["id"] not in images:
                continue
            source = images.source_bytes(record["id"])
            if not source:  # kept by the build without its image: the page shows the item with no thumbnail
                entry["image_error"] = "the built benchmark has no source image for this item"
                continue
            src = thumbs.digest("source", source)
            mask_key = thumbs.digest("mask", src, json.dumps(record.get("mask"), sort_keys=True))
            small = None
            if not out.has(src) or (record.get("mask") and not out.has(mask_key)):
                try:
                    small = thumbs.shrink(source)
                except (OSError, ValueError) as error:  # PIL's UnidentifiedImageError is an OSError
                    entry["image_error"] = f"source image unreadable: {type(error).__name__}"
                    continue
            entry["source"] = out.put(src, small)
            if record.get("mask"):
                entry["mask"] = out.put(mask_key, None if out.has(mask_key) else
                                        thumbs.mask_over(small, rle.decode(record["mask"])))
    return found


Metric = tuple[str, str, "bool | None"]  # (key, header, higher is better?), as benchmarks.report.METRICS


def _columns(rows: list[dict[str, Any]], baseline_rows: dict[str, dict[str, Any]],
             metrics: list[Metric]) -> list[dict[str, Any]]:
    """The per-item columns: the known metrics any item has, in ``metrics`` order, then any other score."""
    present = {k for row in rows for k in row.get("scores", {})} | {
        k for row in baseline_rows.values() for k in row.get("scores", {})}
    known = [m for m in metrics if m[0] in present]
    extra = sorted(present - {m[0] for m in metrics})
    return [{"key": k, "header": h, "higher": hi} for k, h, hi in known] + [
        {"key": k, "header": k, "higher": None} for k in extra]


def page_data(run_dir: Path | str, report: dict[str, Any], baseline: dict[str, Any] | None = None,
              metrics: list[Metric] = (), aggregate: list[Metric] = (), progress: bool = False) -> dict[str, Any]:
    """Everything the page shows, with its thumbnails written under ``<run_dir>/thumbs``. ``metrics``: the known
    metrics in table order; ``aggregate``: the columns of the aggregate tables (both from
    :mod:`benchmarks.report`, which calls this)."""
    from tqdm.auto import tqdm

    run_dir = Path(run_dir)
    out = thumbs.ThumbDir(run_dir)
    rows = _items(run_dir)
    baseline_dir = Path(baseline["run_dir"]) if baseline and baseline.get("run_dir") else None
    baseline_rows = {r["id"]: r for r in _items(baseline_dir)} if baseline_dir else {}
    bench_data = report.get("bench_data")
    sources = _bench_thumbs(out, Path(bench_data) if bench_data else None, {r["id"] for r in rows})
    items = []
    for row in tqdm(rows, desc="report.html", unit="item", disable=not progress):
        found = sources.get(row["id"], {})
        images = {k: found[k] for k in ("source", "mask") if k in found}
        output = _output_thumb(out, run_dir, row["id"], "output")
        if output:
            images["output"] = output
        item = {"id": row["id"], "key": row.get("key"), "category": row.get("category"),
                "edit_type": row.get("edit_type"), "instruction": found.get("instruction"),
                "mask_source": row.get("mask_source"),
                "error": "; ".join(e for e in (row.get("error"), found.get("image_error")) if e) or None,
                "scores": {k: _finite(v) for k, v in row.get("scores", {}).items()},
                "skipped": row.get("skipped") or {}, "images": images,
                "output": f"outputs/{row['id']}.png" if output else None}
        if baseline_dir is not None:
            base = baseline_rows.get(row["id"], {})
            item["baseline"] = {"scores": {k: _finite(v) for k, v in base.get("scores", {}).items()},
                                "error": base.get("error") if base else "not in the baseline run"}
            base_output = _output_thumb(out, baseline_dir, row["id"], "output")
            if base_output:
                images["baseline"] = base_output
        items.append(item)
    _prune(run_dir, items)
    return {"bench": report["bench"], "run": report["run"], "baseline": baseline["run"] if baseline else None,
            "subsets": report["subsets"], "baseline_subsets": baseline["subsets"] if baseline else None,
            "notes": report.get("notes", []), "judge": report.get("judge"),
            "columns": _columns(rows, baseline_rows, list(metrics)), "items": items,
            "aggregate_columns": [{"key": k, "header": h} for k, h, _ in aggregate],
            "sources": bool(sources)}


def _prune(run_dir: Path, items: list[dict[str, Any]]) -> None:
    """Remove the thumbnails no item shows any more (earlier runs' outputs), so the folder holds what it shows."""
    used = {run_dir / rel for item in items for rel in item["images"].values()}
    for path in (run_dir / "thumbs").glob("*/*.jpg"):
        if path not in used:
            path.unlink()


def render(data: dict[str, Any]) -> str:
    """The page: the template with ``data`` inline. Every ``<`` (only ever inside a JSON string) is written as
    ``\\u003c``, so no text (``</script>``, ``<!--``) can end or confuse the script element that holds the data."""
    text = json.dumps(data, separators=(",", ":"), allow_nan=False).replace("<", "\\u003c")
    title = f"{data['bench']} — {data['run']}" + (f" vs {data['baseline']}" if data["baseline"] else "")
    return (TEMPLATE.read_text().replace("{{TITLE}}", html.escape(title))
            .replace("{{DATA}}", text))


def write(run_dir: Path | str, report: dict[str, Any], baseline: dict[str, Any] | None = None,
          metrics: list[Metric] = (), aggregate: list[Metric] = (), progress: bool = False) -> Path:
    """Write ``<run_dir>/report.html`` (and its thumbnails); returns its path."""
    path = Path(run_dir) / "report.html"
    store.atomic_write_text(path, render(page_data(run_dir, report, baseline, metrics, aggregate, progress)))
    return path
