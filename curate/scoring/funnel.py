"""The filter funnel: how many records each step rejected, per edit type, and what remained.

Rows are in pipeline order (upstream stages first, then each select filter, near-duplicates, balancing). Written as
JSON (inside ``metrics/select.json``), CSV for ``dvc plots`` (``plots/funnel.csv``: filter, rejected, remaining, one
column per edit type) and a PNG bar chart (``plots/funnel.png``), which the dataset card embeds.
"""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np


def funnel_rows(steps: list[str], step_codes: np.ndarray, type_codes: np.ndarray, type_names: list[str]) -> list[dict[str, Any]]:
    """``step_codes[i]``: index into ``steps`` of the step that rejected row i, or -1 if it was selected."""
    total = len(step_codes)
    counts = np.zeros((len(steps), max(len(type_names), 1)), dtype=np.int64)
    rejected = step_codes >= 0
    np.add.at(counts, (step_codes[rejected], type_codes[rejected]), 1)
    rows, remaining = [], total
    for index, step in enumerate(steps):
        removed = int(counts[index].sum())
        remaining -= removed
        rows.append({
            "filter": step,
            "rejected": removed,
            "remaining": remaining,
            "by_edit_type": {name: int(counts[index, t]) for t, name in enumerate(type_names) if counts[index, t]},
        })
    return rows


def write_csv(rows: list[dict[str, Any]], type_names: list[str], path: Path | str) -> None:
    from editkit.store import atomic_write_text
    import io

    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["filter", "rejected", "remaining", *type_names])
    for row in rows:
        writer.writerow([row["filter"], row["rejected"], row["remaining"],
                         *[row["by_edit_type"].get(name, 0) for name in type_names]])
    atomic_write_text(path, buffer.getvalue())


def plot_png(rows: list[dict[str, Any]], type_names: list[str], records_in: int, path: Path | str) -> None:
    """Horizontal stacked bars: records rejected by each step, coloured by edit type, remaining count annotated."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    labels = [row["filter"] for row in rows]
    fig, ax = plt.subplots(figsize=(9, 0.45 * len(rows) + 1.6))
    left = np.zeros(len(rows))
    colours = plt.get_cmap("tab20")
    for t, name in enumerate(type_names):
        values = np.array([row["by_edit_type"].get(name, 0) for row in rows], dtype=float)
        if values.any():
            ax.barh(labels, values, left=left, color=colours(t % 20), label=name)
            left += values
    for y, row in enumerate(rows):
        ax.text(left[y], y, f"  -{row['rejected']} → {row['remaining']}", va="center", fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("records rejected (by edit type)")
    final = rows[-1]["remaining"] if rows else records_in
    ax.set_title(f"selection funnel: {records_in} candidates → {final} selected")
    ax.set_xlim(0, max(left.max() if len(left) else 0, 1) * 1.35)
    if type_names:
        ax.legend(fontsize=7, loc="lower right", ncol=2)
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)
