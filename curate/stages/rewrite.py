"""The `rewrite` stage: refine each instruction with an MLLM into strict JSON (refined instruction, edit type,
target phrases, scope), or pass instructions through unchanged with the explicit ``none`` backend (the default).

Reads ``data/ingest/records``, writes ``data/rewrite/records`` and ``metrics/rewrite.json`` (counts of each
``rewrite_status``: ``none``, ``ok``, ``repaired``, ``fallback:<reason>``).
"""
from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import typer

from editkit.mllm.config import ClientConfig

STAGE = "rewrite"


@dataclass
class RewriteParams(ClientConfig):
    prompt_version: str = "v1"  # editkit/mllm/prompts/rewrite_<version>.txt


def passthrough(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The ``none`` backend: keep the instruction, edit type and target phrases from ingest."""
    from editkit import schema, taxonomy

    for record in records:
        if not schema.is_ok(record):
            continue
        record["instruction_refined"] = record.get("instruction")
        record["rewrite_status"] = "none"
        if record.get("scope") is None and record.get("edit_type") in taxonomy.EDIT_TYPES:
            record["scope"] = taxonomy.get(record["edit_type"]).scope
    return records


def main(
    params_file: Path = typer.Option(Path("params.yaml"), "--params", help="params file (section `rewrite`)"),
    input_dir: Path = typer.Option(Path("data/ingest/records"), help="record shards written by ingest"),
    images_dir: Path = typer.Option(Path("data/ingest/images"), help="image shards written by ingest"),
    output_dir: Path = typer.Option(Path("data/rewrite/records"), help="where to write the rewritten records"),
    metrics_file: Path = typer.Option(Path("metrics/rewrite.json"), help="outcome counts (JSON)"),
) -> None:
    """Refine instructions with an MLLM (backend in params.yaml `rewrite`; default `none` = pass-through)."""
    from editkit import config

    from editkit.mllm.backends import MLLMError

    params = config.load_section(RewriteParams, STAGE, params_file)
    try:
        metrics = run(params, input_dir, output_dir, images_dir)
    except MLLMError as error:  # endpoint down, model missing, key unset: say what to do, no traceback
        typer.echo(f"rewrite [{params.backend}]: {error}", err=True)
        raise typer.Exit(code=2) from None
    from editkit import store

    store.write_metrics(metrics_file, metrics)
    typer.echo(f"rewrite [{params.backend}]: {metrics['outcomes']}" + (f" ({metrics['note']})" if metrics.get("note") else ""))


def run(params: RewriteParams, input_dir: Path, output_dir: Path, images_dir: Optional[Path] = None) -> dict[str, Any]:
    """Run the stage and return its metrics."""
    from editkit import schema
    from editkit.pipeline import run_stage

    outcomes: Counter = Counter()
    started = time.perf_counter()

    def count(records: list[dict[str, Any]]) -> None:
        for record in records:
            outcomes["skipped_rejected" if not schema.is_ok(record) else record["rewrite_status"]] += 1

    if params.backend == "none":
        def step(records, _images):
            out = passthrough(records)
            count(out)
            return out

        stats = run_stage(STAGE, input_dir, output_dir, step, images_dir=None)
        note = "backend none: instructions passed through unchanged (set rewrite.backend in params.yaml to refine)"
        client_stats: dict[str, int] = {}
        model = None
    else:
        from editkit.mllm.client import Client
        from curate.instructions import rewrite_records

        if images_dir is None:
            raise ValueError(f"rewrite backend {params.backend!r} needs the ingest image shards (images_dir)")
        with Client(params) as client:  # probes the endpoint / loads the model: fails fast with a clear message
            model = client.backend.model_id

            def step(records, images):
                out = rewrite_records(client, params.prompt_version, records, images)
                count(out)
                return out

            stats = run_stage(STAGE, input_dir, output_dir, step, images_dir=images_dir)
            client_stats = dict(client.stats)
        refined = sum(v for k, v in outcomes.items() if k in ("ok", "repaired"))
        note = f"backend {params.backend}: {refined} of {stats.records_in} instructions refined"
    return {
        "backend": params.backend,
        "model": model,
        "prompt_version": params.prompt_version if params.backend != "none" else None,
        "records": stats.records_in,
        "outcomes": dict(sorted(outcomes.items())),
        "requests_sent": client_stats.get("sent", 0),
        "cache_hits": client_stats.get("cache_hits", 0),
        "request_errors": client_stats.get("errors", 0),
        "note": note,
        "seconds": round(time.perf_counter() - started, 3),
    }
