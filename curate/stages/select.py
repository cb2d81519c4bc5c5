"""The `select` stage: thresholds -> near-duplicate removal -> balanced, exactly-N selection; funnel report.

Streams in two passes and never holds full records: pass 1 reads only compact columns (id, edit type, scope, status,
the needed scores, pHashes) from each shard into numpy arrays (~300 bytes/record: 10^6 records in ~0.5 GB peak); the
decisions are vectorised; pass 2 rewrites each shard with the new status/reason (Arrow columns, no Python dicts) and
appends every rejected record to the rejects table ``data/rejects/rejects.parquet`` (id, stage, reason, edit_type).
Each rejected record is charged to the first step that rejected it; the funnel counts per step and edit type.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer

from curate.scoring.filters import FilterParams
from editkit.config_meta import Range

STAGE = "select"


@dataclass
class DedupeParams:
    enabled: bool = True
    """remove near-duplicate pairs before balancing"""
    max_hamming: Annotated[int, Range(ge=0, le=64)] = 4
    """per 64-bit pHash (source, edited, change); JPEG re-encoding moves 0-2 bits"""
    keep_by: str = "bg_ssim"
    """score deciding which cluster member stays (highest; ties: smallest id)"""


@dataclass
class BalanceParams:
    target: Annotated[dict[str, float], Range(ge=0)] = field(default_factory=dict)
    """edit_type -> weight; empty = uniform over the types present"""


@dataclass
class SelectParams:
    target_size: Annotated[int, Range(ge=1)] = 40000
    """how many pairs the balanced selection keeps (fewer if fewer pass)"""
    seed: Annotated[int, Range(ge=0)] = 0
    """seed of the balanced sampling"""
    filters: FilterParams = field(default_factory=FilterParams)
    """score thresholds a pair must pass (null turns one off)"""
    dedupe: DedupeParams = field(default_factory=DedupeParams)
    """near-duplicate removal by perceptual hashes"""
    balance: BalanceParams = field(default_factory=BalanceParams)
    """the mix of edit types in the selection"""


def run(params: SelectParams, input_dir: Path, output_dir: Path, rejects_dir: Path,
        metrics_file: Path | None = None) -> dict[str, Any]:
    """Run both passes; returns the metrics (funnel included). With ``metrics_file`` they are written in the same
    atomic step as the records and the rejects table."""
    from editkit import store
    from curate.scoring import selection

    started = time.perf_counter()
    repaired = store.recover_input(input_dir)
    repaired += store.recover(output_dir, rejects_dir, *([metrics_file] if metrics_file is not None else []))
    selection.check_input(params, input_dir)  # a field a filter reads missing: one line, before any work
    score_names = selection.needed_scores(params)
    cand = selection.load(input_dir, score_names)
    decision = selection.decide(params, cand)
    selected = decision.step_codes < 0
    by_type = np.bincount(cand.type_codes[selected], minlength=len(cand.type_names))
    metrics = {
        "records_in": len(cand.ids),
        "selected": int(selected.sum()),
        "target_size": params.target_size,
        "seed": params.seed,
        "selected_by_edit_type": {n: int(c) for n, c in zip(cand.type_names, by_type) if c},
        "funnel": decision.funnel,
        "rejected_by_reason": decision.rejected_by_reason(),
        "skipped_filters": decision.skipped_filters,  # thresholds set but no record has the score (e.g. CLIP off)
        "dedupe_clusters_merged": decision.duplicates,
        "warning": decision.warning,
    }
    if repaired:
        metrics["repaired"] = repaired
    selection.write_outputs(cand, decision, input_dir, output_dir, rejects_dir, metrics_file, metrics)
    metrics["seconds"] = round(time.perf_counter() - started, 3)
    return metrics


def main(
    params_file: Path = typer.Option(Path("params.yaml"), "--params", help="params file (section `select`)"),
    input_dir: Path = typer.Option(Path("data/score/records"), "--input", help="record shards written by score"),
    output_dir: Path = typer.Option(Path("data/select/records"), "--out", help="all records, selected ones status ok"),
    rejects_dir: Path = typer.Option(Path("data/rejects"), "--rejects", help="rejects table (Parquet)"),
    metrics_file: Path = typer.Option(Path("metrics/select.json"), "--metrics", help="counts and the funnel (JSON)"),
    plots_dir: Path = typer.Option(Path("plots"), "--plots", help="funnel.csv (dvc plots) and funnel.png"),
) -> None:
    """Select the training set: score thresholds, near-duplicate removal, balance over edit types, exactly N.

    Steps in order (params.yaml `select`): records rejected upstream; thresholds in `filters` (a missing score
    passes); near-duplicates (pHashes within `dedupe.max_hamming` bits, best `keep_by` kept); balancing to exactly
    `target_size` toward `balance.target` (uniform if empty), deterministic for `seed`. Every record keeps its
    reason; all rejects go to the rejects table; the funnel goes to metrics and plots/.
    """
    from editkit import config
    from curate.scoring import funnel

    params = config.load_section(SelectParams, STAGE, params_file)
    metrics = run(params, input_dir, output_dir, rejects_dir, metrics_file)  # metrics committed with the records
    type_names = sorted({t for row in metrics["funnel"] for t in row["by_edit_type"]})
    funnel.write_csv(metrics["funnel"], type_names, plots_dir / "funnel.csv")
    funnel.plot_png(metrics["funnel"], type_names, metrics["records_in"], plots_dir / "funnel.png")
    if metrics["warning"]:
        typer.secho(f"select: WARNING {metrics['warning']}", fg=typer.colors.YELLOW, err=True)
    typer.echo(f"select: {metrics['selected']} of {metrics['records_in']} selected "
               f"{metrics['selected_by_edit_type']} in {metrics['seconds']} s")
