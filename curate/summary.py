"""`editkit summary`: what the last `dvc repro` produced and where (reads metrics/*.json)."""
from __future__ import annotations

import json
from pathlib import Path


def print_summary(metrics_dir: str | Path = "metrics") -> None:
    from rich.console import Console
    from rich.table import Table

    metrics_dir = Path(metrics_dir)
    console = Console()
    files = sorted(metrics_dir.glob("*.json"))
    if not files:
        console.print(f"no metrics in {metrics_dir}/ yet: run `dvc repro` first")
        return
    table = Table(title="editkit: what was produced")
    table.add_column("stage")
    table.add_column("key figures")
    for path in files:
        data = json.loads(path.read_text())
        figures = {k: v for k, v in data.items() if isinstance(v, (int, float, str)) and not isinstance(v, bool)}
        table.add_row(path.stem, ", ".join(f"{k}={_fmt(v)}" for k, v in list(figures.items())[:8]))
    console.print(table)


def _fmt(value: object) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
