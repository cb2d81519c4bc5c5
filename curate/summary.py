"""`editkit summary`: what the last `dvc repro` produced and where, in a dozen lines (reads metrics/*.json).

Shows records in, rejected by reason, selected per edit type, the masks' mean IoU, shipped masks (kept, replaced,
ambiguous), where the dataset and its card are, what the export dropped (benchmark leaks) and which licences it
flagged, and which optional parts were off (CLIP scores, MLLM rewrite, grounded masks), from ``params.yaml``.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

PIPELINE_METRICS = ("ingest", "rewrite", "masks", "score", "select", "export")
TOP_REASONS = 8


def _load(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def optional_parts_off(params: dict[str, Any]) -> list[str]:
    """Human-readable list of the optional parts that this configuration leaves off."""
    off = []
    clip = (params.get("score") or {}).get("clip") or {}
    if not clip.get("enabled", False):
        off.append("CLIP scores (score.clip.enabled: false, no CLIP weights configured; CLIP filters skipped)")
    backend = ((params.get("rewrite") or {}).get("client") or {}).get("backend", "none")
    if backend == "none":
        off.append("MLLM instruction rewrite (rewrite.client.backend: none, instructions passed through)")
    quality = (params.get("score") or {}).get("quality") or {}
    if not quality.get("enabled", False) or ((quality.get("client") or {}).get("backend", "none") == "none"):
        off.append("MLLM quality scores (score.quality off or no MLLM configured; quality filters skipped)")
    mode = (params.get("masks") or {}).get("mode", "diff")
    if mode == "diff":
        off.append("grounded masks (masks.mode: diff; Grounding-DINO -> SAM2 needs weights)")
    return off


def summary_lines(metrics_dir: Path, params: dict[str, Any]) -> list[str]:
    m = {name: _load(metrics_dir / f"{name}.json") for name in PIPELINE_METRICS}
    select, export, masks = m["select"], m["export"], m["masks"]
    lines = []
    records_in = select.get("records_in") or next(
        (m["ingest"].get(k) for k in ("records", "records_in", "records_out", "total") if m["ingest"].get(k)), None)
    lines.append(f"records in: {records_in if records_in is not None else '?'}")
    reasons = select.get("rejected_by_reason") or {}
    if reasons:
        top = sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0]))
        shown = "; ".join(f"{reason} ({count})" for reason, count in top[:TOP_REASONS])
        more = f"; +{len(top) - TOP_REASONS} more reasons" if len(top) > TOP_REASONS else ""
        lines.append(f"rejected: {sum(reasons.values())} — {shown}{more}")
    if select:
        per_type = ", ".join(f"{t} {c}" for t, c in select.get("selected_by_edit_type", {}).items())
        lines.append(f"selected: {select.get('selected')} (target {select.get('target_size')}) — {per_type}")
        if select.get("warning"):
            lines.append(f"warning: {select['warning']}")
    if masks.get("mean_iou") is not None:
        lines.append(f"masks: mean_iou {masks['mean_iou']:.3f} vs ground truth (goal >= 0.90)")
    shipped = masks.get("shipped_masks") or {}
    if shipped.get("count"):
        lines.append(shipped_line(masks))
    if export:
        lines.append(f"dataset: {export.get('dataset_path')} ({export.get('rows')} rows, {export.get('dataset_mb')} MB; "
                     f"datasets.load_from_disk), card {export.get('card_path')}, funnel plot plots/funnel.png")
        lines += export_lines(export)
    off = optional_parts_off(params)
    if off:
        lines.append("off: " + "; ".join(off))
    lines.append(f"all metrics: {metrics_dir}/*.json (`dvc metrics show`), rejects table: data/rejects/")
    return lines


def shipped_line(masks: dict[str, Any]) -> str:
    """Shipped masks: how many, the policy, their agreement with the derived masks, what was replaced or flagged."""
    shipped, counts = masks.get("shipped_masks") or {}, masks.get("counts") or {}
    mean = shipped.get("mean_iou_vs_derived")
    line = (f"shipped masks: {shipped['count']} (masks.source_policy {masks.get('source_policy', 'keep')}), "
            f"mean IoU with the derived masks {mean if mean is not None else '?'}")
    if counts.get("shipped_mask_replaced"):
        line += f"; replaced by derived masks: {counts['shipped_mask_replaced']} (flag shipped_mask_replaced)"
    if counts.get("mask_ambiguous"):
        line += f"; ambiguous paint: {counts['mask_ambiguous']} (flag mask_ambiguous)"
    return line


def export_lines(export: dict[str, Any]) -> list[str]:
    """What the export dropped (benchmark leaks) and which licences it flagged."""
    lines = []
    if export.get("mask_source"):
        lines.append("exported masks: " + ", ".join(f"{k} {v}" for k, v in export["mask_source"].items()))
    leak = export.get("leak_check") or {}
    if leak.get("enabled"):
        by_bench = ", ".join(f"{k} {v}" for k, v in (leak.get("dropped_by_benchmark") or {}).items())
        checked = leak.get("items_checked", 0)
        line = (f"benchmark leaks: dropped {leak.get('dropped', 0)}" + (f" ({by_bench})" if by_bench else "")
                + f" of the rows, checked against {checked} benchmark items"
                + f" ({', '.join(leak.get('benchmarks') or {}) or 'no built benchmark found'})")
        if leak.get("not_found"):
            line += f"; not built: {', '.join(leak['not_found'])}"
        lines.append(line + f"; reasons in {export.get('rejects_path', 'data/export/rejects.parquet')}")
    elif leak:
        lines.append("benchmark leaks: NOT checked (export.leak_check.enabled: false)")
    flagged = export.get("licence_flagged") or {}
    if flagged:
        lines.append("licences flagged (allowed by export.allow_licences): "
                     + "; ".join(f"{name} ({', '.join(r)})" for name, r in flagged.items()))
    if export.get("licence_unknown_rows"):
        lines.append(f"licence unknown: {export['licence_unknown_rows']} rows (flag licence_unknown; see the card)")
    return lines


def print_summary(metrics_dir: str | Path = "metrics", params_file: str | Path = "params.yaml") -> None:
    from rich.console import Console

    from editkit.config import load_yaml

    metrics_dir, params_file = Path(metrics_dir), Path(params_file)
    console = Console()
    if not any(metrics_dir.glob("*.json")):
        console.print(f"no metrics in {metrics_dir}/ yet: run `dvc repro` first")
        return
    params = load_yaml(params_file) if params_file.exists() else {}
    console.print("[bold]editkit: what `dvc repro` produced[/bold]")
    for line in summary_lines(metrics_dir, params or {}):
        console.print("  " + line, highlight=False, soft_wrap=True)
    others = sorted(p for p in metrics_dir.glob("*.json") if p.stem not in PIPELINE_METRICS)
    for path in others:  # benchmarks, training...: their top-level figures
        figures = {k: v for k, v in _load(path).items() if isinstance(v, (int, float, str)) and not isinstance(v, bool)}
        console.print(f"  {path.stem}: " + ", ".join(f"{k}={_fmt(v)}" for k, v in list(figures.items())[:6]),
                      highlight=False, soft_wrap=True)


def _fmt(value: object) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
