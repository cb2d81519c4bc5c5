"""`editkit bench evaluate`: edit every benchmark item, score it, write the tables, plots and comparison.

A run folder (``--out``) holds everything, so reruns resume and two runs can be compared::

    run.json          the pinned editor settings (a rerun with other settings is refused)
    outputs/<id>.png  one edited image per item (written as each batch finishes)
    judge/<id>.json   raw judge answers + parsed scores (pinned prompt version and judge model)
    items.jsonl       per item: category, mask source, scores, skipped metrics with reasons, failure reason
    report.md/.json   per-category tables (full set; GEdit also the Intersection_exist subset)
    report.html       the tables and every item's images and scores, sortable (opens from disk; thumbs/ beside it)
    plots/full.png    bar charts; compare.md/.json and plots/compare.png with --baseline

Work goes one benchmark shard (~1,000 items) at a time, so memory stays flat on the full benchmarks.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable

from benchmarks import editor, items, report
from benchmarks.pixel_metrics import pixel_metrics
from benchmarks.judge import Judge
from editkit import rle, schema, store, taxonomy


def make_judge(bench: str, bench_dir: Path | str, client_config: Any, repeats: int = 1) -> tuple[Judge | None, Any]:
    """(Judge, client) from a :class:`editkit.mllm.config.ClientConfig`; (None, None) when the backend is none."""
    if client_config is None or client_config.backend == "none":
        return None, None
    from editkit.mllm.client import Client

    client = Client(client_config)
    rubric = items.bench_info(bench_dir).get("judge_prompts") if bench == "imgedit" else None
    return Judge(bench, client.generate, client.backend.model_id, rubric, repeats), client


def evaluate(
    bench_dir: Path | str,
    run_dir: Path | str,
    config: editor.EditorConfig,
    judge: Judge | None = None,
    baseline_dir: Path | str | None = None,
    pipe: Any = None,
    on_item: Callable[[str], None] | None = None,
    progress: bool = True,
    convention: str = "standard",
    compbench: Any = None,
) -> dict[str, Any]:
    """Run the whole evaluation; returns ``{"report", "paths", "stats"}``. ``convention``: how masked PSNR/SSIM are
    computed (``standard`` or ``cocoedit``, see :func:`editkit.metrics.metric_pair`); ``compbench``: a
    :class:`benchmarks.compbench.CompBenchScorer` adding CompBench's own metrics."""
    from editkit.metrics import metric_pair

    metric_pair(convention)  # an unknown convention fails before any editing
    run_dir = Path(run_dir)
    info = items.bench_info(bench_dir)
    bench = info["bench"]
    baseline = report.load_report(baseline_dir) if baseline_dir is not None else None  # fail early, not after hours
    cache = editor.OutputCache(run_dir, config.fingerprint())
    results: list[dict[str, Any]] = []
    stats = {"generated": 0, "cached": 0, "generation_failed": 0, "judged": 0, "judge_failed": 0,
             "seconds_edit": 0.0, "seconds_score": 0.0, "seconds_judge": 0.0}
    for _, records, images in items.iter_benchmark(bench_dir):
        ok = [r for r in records if schema.is_ok(r)]
        sources = {r["id"]: images.source(r["id"]) for r in ok}
        started = time.perf_counter()
        outcome = editor.generate([(r, sources[r["id"]]) for r in ok], cache, config, pipe, on_item, progress)
        stats["seconds_edit"] += time.perf_counter() - started
        stats["generated"] += outcome["generated"]
        stats["cached"] += outcome["cached"]
        stats["generation_failed"] += len(outcome["failures"])
        started = time.perf_counter()
        shard_results = [_score_item(r, sources.get(r["id"]), cache, outcome["failures"], convention, compbench)
                         for r in records]
        stats["seconds_score"] += time.perf_counter() - started
        if judge is not None:
            started = time.perf_counter()
            _judge_shard(judge, run_dir, ok, sources, cache, shard_results, stats, progress)
            stats["seconds_judge"] += time.perf_counter() - started
        results += shard_results
        del sources
    store.atomic_write_text(run_dir / "items.jsonl", "".join(json.dumps(r, sort_keys=True) + "\n" for r in results))
    built = report.build_report(bench, run_dir.name, results)
    built["judge"] = None if judge is None else {"model": judge.model, "prompt_version": judge.prompt_version,
                                                 "prompt_sha": judge.prompt_sha,
                                                 "repeats": judge.repeats}
    built["editor"] = config.fingerprint()
    built["metrics_convention"] = convention
    built["bench_data"] = str(bench_dir)  # the built benchmark scored: report.html shows its sources and masks
    if convention != "standard":
        built["notes"].append(f"psnr_bg / ssim_bg follow the {convention} convention (docs/cocoedit.md), not ours")
    paths = report.write_report(run_dir, built, baseline)
    stats = {k: round(v, 3) if isinstance(v, float) else v for k, v in stats.items()}
    return {"report": built, "paths": paths, "stats": stats}


def _score_item(record: dict[str, Any], source: Any, cache: editor.OutputCache,
                failures: dict[str, str], convention: str = "standard", compbench: Any = None) -> dict[str, Any]:
    meta = items.meta(record)
    result: dict[str, Any] = {
        "id": record["id"], "key": record["origin_key"], "category": meta.get("category"),
        "edit_type": record["edit_type"], "language": meta.get("instruction_language"),
        "intersection_exist": meta.get("intersection_exist"), "mask_source": record["mask_source"],
        "review_status": record["review_status"], "scores": {}, "skipped": {}, "error": None,
    }
    if not schema.is_ok(record):
        result["error"] = f"rejected at {record['reject_stage']}: {record['reject_reason']}"
    elif record["id"] in failures:
        result["error"] = failures[record["id"]]
    elif not cache.has(record["id"]):
        result["error"] = "no output (generation did not run for this item)"
    else:
        rejected_in_review = record["review_status"] == "reject"  # the reviewer found no usable mask
        mask = rle.decode(record["mask"]) if record["mask"] is not None and not rejected_in_review else None
        aligned = record["edit_type"] is None or taxonomy.get(record["edit_type"]).pixel_aligned
        metrics = pixel_metrics(source, cache.load(record["id"]), mask, aligned, convention)
        if rejected_in_review:
            metrics["skipped"] = {name: "mask_rejected_in_review" for name in metrics["skipped"]}
        result["scores"], result["skipped"] = metrics["scores"], metrics["skipped"]
        if compbench is not None and mask is not None:
            result["scores"].update(compbench(source, cache.load(record["id"]), mask, meta.get("caption", ""),
                                              _ground_truth(meta.get("gt_path"))))
    return result


def _ground_truth(path: str | None) -> Any:
    """A benchmark's ground-truth edited image (CompBench), as uint8 RGB; None when the release has none."""
    if not path or not Path(path).is_file():
        return None
    return store.decode_rgb(Path(path).read_bytes())


def _judge_shard(judge: Judge, run_dir: Path, ok: list[dict[str, Any]], sources: dict[str, Any],
                 cache: editor.OutputCache, results: list[dict[str, Any]], stats: dict[str, int],
                 progress: bool) -> None:
    by_id = {r["id"]: r for r in results}
    work = [(r, items.meta(r).get("category"), sources[r["id"]], cache.load(r["id"]))
            for r in ok if by_id[r["id"]]["error"] is None]
    for record_id, entry in judge.score(run_dir, work, progress).items():
        if "scores" in entry:
            by_id[record_id]["scores"].update(entry["scores"])
            stats["judged"] += 1
        else:
            by_id[record_id]["skipped"]["judge"] = entry["error"]
            stats["judge_failed"] += 1
