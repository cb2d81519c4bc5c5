"""Per-category tables (Markdown + JSON) and plots of a benchmark run, and the side-by-side comparison of two runs.

Rows are the benchmark's own categories (GEdit ``task_type``, ImgEdit ``edit_type``) plus ``all``; a cell is the mean
over the items where the metric exists, with its item count in the JSON (``<metric>_n``). GEdit runs get a second
table on the ``Intersection_exist`` subset, as GEdit reports it.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from editkit import store

# (key, header, higher is better?) in table order; the judge columns appear only when present.
METRICS = [
    ("psnr_bg", "PSNR bg ↑", True),
    ("ssim_bg", "SSIM bg ↑", True),
    ("edit_l1", "edit L1", None),  # a change magnitude: neither direction is "better" on its own
    ("mask_area", "mask area", None),
    ("cb_psnr", "CompBench PSNR ↑", True),  # CompBench's own: (1 − mask)-zeroed images at 512², all pixels
    ("cb_ssim", "CompBench SSIM ↑", True),
    ("cb_lpips", "CompBench LPIPS ↓", False),
    ("lc_t", "LC-T ↑", True),
    ("lc_i", "LC-I ↑", True),
    ("judge_sc", "SC ↑", True),
    ("judge_pq", "PQ ↑", True),
    ("judge_o", "O ↑", True),
    ("judge_avg", "judge 1-5 ↑", True),
    ("judge_o_std", "O spread", None),  # std over repeated judge runs (--judge-repeats)
    ("judge_avg_std", "judge spread", None),
]
NOTES = [
    "PSNR/SSIM bg: over the NON-edited region only (mask = pixels that should change), output resized to the source.",
    "No masked PSNR/SSIM for outputs not pixel-aligned with the source (extract) nor for whole-image edits "
    "(style, tone): they have no unedited region. Items without a reviewed/proposed mask are counted in n but "
    "have no masked scores.",
]


def aggregate(items: Iterable[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """items (``category``, ``scores``) -> {category: {"n", metric, metric_n}} plus the row ``all``."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for item in items:
        groups.setdefault(item["category"], []).append(item)
        groups.setdefault("all", []).append(item)
    rows = {}
    for category in sorted(groups, key=lambda c: (c == "all", c)):
        members = groups[category]
        row: dict[str, Any] = {"n": len(members), "failed": sum(1 for m in members if m.get("error"))}
        for key, _, _ in METRICS:
            values = [m["scores"][key] for m in members if m.get("scores", {}).get(key) is not None]
            values = [v for v in values if math.isfinite(v)]
            row[key] = float(np.mean(values)) if values else None
            row[f"{key}_n"] = len(values)
        rows[category] = row
    return rows


def build_report(bench: str, run_name: str, items: list[dict[str, Any]]) -> dict[str, Any]:
    subsets = {"full": aggregate(items)}
    if bench == "gedit":
        subsets["intersection"] = aggregate(i for i in items if i.get("intersection_exist"))
    areas = [i["scores"]["mask_area"] for i in items if i.get("scores", {}).get("mask_area") is not None]
    counts, edges = np.histogram(areas, bins=10, range=(0.0, 1.0))
    histogram = {"edges": [round(float(e), 2) for e in edges], "counts": [int(c) for c in counts]}
    return {"bench": bench, "run": run_name, "items": len(items), "subsets": subsets, "notes": NOTES,
            "mask_area_histogram": histogram}


def _columns(report: dict[str, Any]) -> list[tuple[str, str, bool | None]]:
    rows = [row for subset in report["subsets"].values() for row in subset.values()]
    return [m for m in METRICS if any(row.get(f"{m[0]}_n") for row in rows)]


def _fmt(value: float | None, key: str) -> str:
    if value is None:
        return "—"
    return f"{value:.2f}" if key in ("psnr_bg", "cb_psnr", "lc_t") or key.startswith("judge") else f"{value:.3f}"


def to_markdown(report: dict[str, Any]) -> str:
    columns = _columns(report)
    lines = [f"# {report['bench']} — {report['run']} ({report['items']} items)", ""]
    for subset, rows in report["subsets"].items():
        lines += [f"## {subset}", "", "| category | n | " + " | ".join(h for _, h, _ in columns) + " |",
                  "|---|---:|" + "---:|" * len(columns)]
        for category, row in rows.items():
            cells = [_fmt(row[key], key) for key, _, _ in columns]
            lines.append(f"| {category} | {row['n']} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += [f"- {note}" for note in report["notes"]]
    return "\n".join(lines) + "\n"


def compare(run: dict[str, Any], baseline: dict[str, Any]) -> dict[str, Any]:
    """Per subset/category/metric: baseline, run, delta (run - baseline)."""
    if run["bench"] != baseline["bench"]:
        raise ValueError(f"cannot compare a {run['bench']} run with a {baseline['bench']} baseline")
    conventions = (run.get("metrics_convention", "standard"), baseline.get("metrics_convention", "standard"))
    if conventions[0] != conventions[1]:
        raise ValueError(f"cannot compare PSNR/SSIM of the {conventions[0]} convention with a baseline scored in the "
                         f"{conventions[1]} convention: re-run one with the other --metrics-convention")
    out: dict[str, Any] = {"bench": run["bench"], "run": run["run"], "baseline": baseline["run"], "subsets": {}}
    for subset, rows in run["subsets"].items():
        base_rows = baseline["subsets"].get(subset, {})
        table = {}
        for category, row in rows.items():
            base = base_rows.get(category, {})
            table[category] = {
                key: {"baseline": base.get(key), "run": row.get(key),
                      "delta": None if base.get(key) is None or row.get(key) is None else row[key] - base[key]}
                for key, _, _ in METRICS
            }
        out["subsets"][subset] = table
    return out


def comparison_markdown(comparison: dict[str, Any], run: dict[str, Any], baseline: dict[str, Any]) -> str:
    columns = [m for m in METRICS if m in _columns(run) or m in _columns(baseline)]
    lines = [f"# {comparison['bench']}: {comparison['run']} vs baseline {comparison['baseline']}", "",
             "Cells: baseline → run (Δ).", ""]
    for subset, table in comparison["subsets"].items():
        lines += [f"## {subset}", "", "| category | " + " | ".join(h for _, h, _ in columns) + " |",
                  "|---|" + "---:|" * len(columns)]
        for category, cells in table.items():
            parts = []
            for key, _, higher in columns:
                cell = cells[key]
                if cell["delta"] is None:
                    parts.append(f"{_fmt(cell['baseline'], key)} → {_fmt(cell['run'], key)}")
                else:
                    delta = round(cell["delta"], 3) + 0.0  # as shown; + 0.0 turns -0.0 into 0.0
                    mark = "" if higher is None or delta == 0 else (" ✓" if (delta > 0) == higher else " ✗")
                    parts.append(f"{_fmt(cell['baseline'], key)} → {_fmt(cell['run'], key)} ({delta:+.3f}{mark})")
            lines.append(f"| {category} | " + " | ".join(parts) + " |")
        lines.append("")
    return "\n".join(lines) + "\n"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot(report: dict[str, Any], path: Path | str, baseline: dict[str, Any] | None = None,
         subset: str = "full") -> Path:
    """Bar charts of each metric per category of one subset, with the baseline's bars beside when given."""
    plt = _pyplot()
    rows = report["subsets"][subset]
    base_rows = baseline["subsets"].get(subset, {}) if baseline else {}
    columns = [m for m in _columns(report) if m[0] != "mask_area"] or METRICS[:1]
    categories = list(rows)
    fig, axes = plt.subplots(len(columns), 1, figsize=(max(6, 0.9 * len(categories) + 2), 2.6 * len(columns)),
                             squeeze=False)
    x = np.arange(len(categories))
    for ax, (key, header, _) in zip(axes[:, 0], columns):
        values = [rows[c].get(key) or 0.0 for c in categories]
        if baseline:
            base = [base_rows.get(c, {}).get(key) or 0.0 for c in categories]
            ax.bar(x - 0.2, base, 0.4, label=baseline["run"], color="#999999")
            ax.bar(x + 0.2, values, 0.4, label=report["run"], color="#3a6fb0")
            ax.legend(fontsize=7)
        else:
            ax.bar(x, values, 0.6, color="#3a6fb0")
        ax.set_ylabel(header, fontsize=8)
        ax.set_xticks(x, categories, rotation=30, ha="right", fontsize=7)
    fig.suptitle(f"{report['bench']} — {report['run']} ({subset})", fontsize=9)
    return _save(plt, fig, path)


def plot_mask_areas(report: dict[str, Any], path: Path | str) -> Path:
    """The distribution of edit-mask areas behind the scores (PSNR on a small background is easier)."""
    plt = _pyplot()
    histogram = report["mask_area_histogram"]
    fig, ax = plt.subplots(figsize=(5, 2.6))
    edges = np.asarray(histogram["edges"])
    ax.bar(edges[:-1], histogram["counts"], width=np.diff(edges), align="edge", color="#3a6fb0", edgecolor="white")
    ax.set_xlabel("edit mask area (share of the image)", fontsize=8)
    ax.set_ylabel("items", fontsize=8)
    return _save(plt, fig, path)


def _save(plt: Any, fig: Any, path: Path | str) -> Path:
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_report(run_dir: Path | str, report: dict[str, Any],
                 baseline: dict[str, Any] | None = None) -> dict[str, Path]:
    """``report.json`` / ``report.md`` / ``plots/*.png`` and the page ``report.html`` (:mod:`benchmarks.report_html`)
    in the run folder; with a ``baseline`` (a :func:`load_report` result) also the comparison, and the page shows
    the baseline's outputs and scores beside the run's."""
    run_dir = Path(run_dir)
    paths = {"json": run_dir / "report.json", "markdown": run_dir / "report.md", "plot": run_dir / "plots" / "full.png"}
    store.write_json(paths["json"], report)
    store.atomic_write_text(paths["markdown"], to_markdown(report))
    plot(report, paths["plot"])
    for subset in report["subsets"]:
        if subset != "full":
            paths[f"plot_{subset}"] = plot(report, run_dir / "plots" / f"{subset}.png", subset=subset)
    paths["plot_mask_area"] = plot_mask_areas(report, run_dir / "plots" / "mask_area.png")
    if baseline is not None:
        paths.update(write_comparison(run_dir, report, baseline))
    else:
        paths["html"] = write_html(run_dir, report)
    return paths


def write_html(run_dir: Path | str, report: dict[str, Any], baseline: dict[str, Any] | None = None) -> Path:
    """``report.html``: the tables and every item's images and scores, sortable (a static page: opens from disk)."""
    from benchmarks import report_html

    return report_html.write(run_dir, report, baseline, METRICS, _columns(report))


def write_comparison(run_dir: Path | str, report: dict[str, Any], baseline: dict[str, Any]) -> dict[str, Path]:
    """``compare.json`` / ``compare.md`` / ``plots/compare.png`` in the run folder, and ``report.html`` again with
    the baseline's outputs and scores beside the run's."""
    run_dir = Path(run_dir)
    comparison = compare(report, baseline)
    paths = {"compare_json": run_dir / "compare.json", "compare_markdown": run_dir / "compare.md",
             "compare_plot": run_dir / "plots" / "compare.png"}
    store.write_json(paths["compare_json"], comparison)
    store.atomic_write_text(paths["compare_markdown"], comparison_markdown(comparison, report, baseline))
    plot(report, paths["compare_plot"], baseline)
    paths["html"] = write_html(run_dir, report, baseline)
    return paths


def load_report(run_dir: Path | str) -> dict[str, Any]:
    path = Path(run_dir) / "report.json"
    if not path.is_file():
        raise FileNotFoundError(f"no report at {path}: run `editkit bench evaluate` for that run first")
    report = json.loads(path.read_text())
    report["run_dir"] = str(Path(run_dir))  # where its items and outputs are (the comparison page shows them)
    return report
