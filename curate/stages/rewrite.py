"""The `rewrite` stage: refine each instruction with an MLLM into strict JSON (refined instruction, edit type,
target phrases, scope), or pass instructions through unchanged with the explicit ``none`` backend (the default).

Reads ``data/ingest/records``, writes ``data/rewrite/records`` and ``metrics/rewrite.json`` (counts of each
``rewrite_status``: ``none``, ``ok``, ``repaired``, ``fallback:<reason>``).
"""
from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import typer

from editkit.mllm.config import ClientConfig

STAGE = "rewrite"


@dataclass
class RewriteParams:
    client: ClientConfig = field(default_factory=ClientConfig)
    """the MLLM client that rewrites instructions; backend none passes them through"""
    prompt_version: str = "v1"
    """the rewrite prompt: editkit/mllm/prompts/rewrite_<version>.txt"""


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
    executor: Optional[str] = typer.Option(None, "--executor", help="local | ray (default: params.yaml `executor`)"),
) -> None:
    """Refine instructions with an MLLM (backend in params.yaml `rewrite`; default `none` = pass-through)."""
    from editkit import config

    from editkit.executors import stage_executor
    from editkit.mllm.backends import MLLMError

    params = config.load_section(RewriteParams, STAGE, params_file)
    try:  # the metrics are committed with the records (one atomic step)
        metrics = run(params, input_dir, output_dir, images_dir, stage_executor(params_file, executor),
                      metrics_file=metrics_file)
    except MLLMError as error:  # endpoint down, model missing, key unset: say what to do, no traceback
        typer.echo(f"rewrite [{params.client.backend}]: {error}", err=True)
        raise typer.Exit(code=2) from None
    note = f" ({metrics['note']})" if metrics.get("note") else ""
    typer.echo(f"rewrite [{params.client.backend}]: {metrics['outcomes']}" + note)


class RewriteStep:
    """Rewrites one batch with the MLLM client (probed / loaded once per worker, when the step is built)."""

    def __init__(self, params: RewriteParams):
        from editkit.mllm.client import Client

        self.prompt_version = params.prompt_version
        self.client = Client(params.client)  # probes the endpoint / loads the model: fails fast with a clear message
        self.facts = {"model": self.client.backend.model_id}

    @property
    def counters(self) -> dict[str, int]:
        return dict(self.client.stats)

    def __call__(self, records: list[dict[str, Any]], images) -> list[dict[str, Any]]:
        from curate.instructions import rewrite_records

        return rewrite_records(self.client, self.prompt_version, records, images)

    def close(self) -> None:
        self.client.close()


def passthrough_step():
    return lambda records, _images: passthrough(records)


def run(params: RewriteParams, input_dir: Path, output_dir: Path, images_dir: Optional[Path] = None,
        executor: Any = None, metrics_file: Optional[Path] = None) -> dict[str, Any]:
    """Run the stage and return its metrics (with ``metrics_file``: also written with the records, atomically)."""
    from editkit import schema, store
    from editkit.pipeline import Deferred, run_stage

    started = time.perf_counter()
    if params.client.backend == "none":
        step, images = Deferred(passthrough_step), None
    else:
        if images_dir is None:
            raise ValueError(f"rewrite backend {params.client.backend!r} needs the ingest image shards (images_dir)")
        step, images = Deferred(RewriteStep, params), images_dir

    def summarize(stats, records_dir: Path) -> dict[str, Any]:
        outcomes: Counter = Counter()
        for _, records in store.iter_records(records_dir):  # from the output, so every executor reports the same
            for record in records:
                outcomes["skipped_rejected" if not schema.is_ok(record) else record["rewrite_status"]] += 1
        if params.client.backend == "none":
            note = ("backend none: instructions passed through unchanged (set rewrite.client.backend in params.yaml "
                    "to refine)")
        else:
            refined = sum(v for k, v in outcomes.items() if k in ("ok", "repaired"))
            note = f"backend {params.client.backend}: {refined} of {stats.records_in} instructions refined"
        metrics = {
            "backend": params.client.backend,
            "model": stats.facts.get("model"),
            "prompt_version": params.prompt_version if params.client.backend != "none" else None,
            "records": stats.records_in,
            "outcomes": dict(sorted(outcomes.items())),
            "requests_sent": stats.counters.get("sent", 0),
            "cache_hits": stats.counters.get("cache_hits", 0),
            "request_errors": stats.counters.get("errors", 0),
            "note": note,
            "seconds": round(time.perf_counter() - started, 3),
        }
        if stats.repaired:
            metrics["repaired"] = list(stats.repaired)
        return metrics

    stats = run_stage(STAGE, input_dir, output_dir, step, images_dir=images, executor=executor,
                      metrics_file=metrics_file, summarize=summarize)
    return {**stats.metrics, "seconds": round(time.perf_counter() - started, 3)}
