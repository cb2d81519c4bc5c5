"""`editkit annotate ...`: review the pipeline's masks in a local Label Studio and merge the reviews back."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from editkit.cli_app import command_group

app = command_group(help="Mask review in Label Studio: serve -> push -> (review in the browser) -> pull -> merge "
                    "(the `review` DVC stage).")

PARAMS = typer.Option("params.yaml", help="params file; section `annotate`")


def _params(path: str):
    from annotate.settings import load_params

    return load_params(path)


@app.command()
def serve(params: str = PARAMS) -> None:
    """Start Label Studio on 127.0.0.1 (installing it into its own virtualenv on first use) and wait until healthy."""
    from annotate import server

    p = _params(params)
    pid = server.start(p)
    creds = server.credentials(p)
    typer.echo(f"Label Studio is up: {server.base_url(p)}  (pid {pid}; stop with `editkit annotate stop`)")
    typer.echo(f"login: {creds.username}; password: $EDITKIT_LS_PASSWORD or {p.state_dir / 'credentials.json'} (0600)")


@app.command()
def stop(params: str = PARAMS) -> None:
    """Stop the server started by `serve` (by its recorded PID)."""
    from annotate import server

    typer.echo("stopped" if server.stop(_params(params)) else "no server of ours was running")


@app.command()
def push(params: str = PARAMS, records: str = typer.Option(None, help="records dir (default: annotate.records)"),
         limit: int = typer.Option(0, help="push at most this many records (0 = all)")) -> None:
    """Create/reuse the project and push records as tasks with their mask as a prediction. Safe to repeat."""
    import itertools

    from annotate import project, server
    from editkit import store

    p = _params(params)
    rows = (r for _, shard in store.iter_records(records or p.records) for r in shard)
    if limit:
        rows = itertools.islice(rows, limit)
    counts = project.push(server.client(p), p, rows, store.ImageStore(p.images))
    typer.echo(" ".join(f"{k}={v}" for k, v in counts.items()))


@app.command()
def pull(params: str = PARAMS) -> None:
    """Export the annotations (raw JSON under the data folder) and write the reviews file the `review` stage reads."""
    from annotate import project, server
    from editkit import store

    p = _params(params)
    export = p.state_dir / "exports" / f"{p.project_title.replace(' ', '_')}.json"
    reviews = project.pull(server.client(p), p, export)
    store.write_json(p.reviews, reviews)
    typer.echo(f"{len(reviews)} reviews -> {p.reviews} (raw export: {export})")


@app.command()
def merge(
    params: str = PARAMS,
    records: Optional[str] = typer.Option(None, help="records to merge into (default: annotate.records)"),
    reviews: Optional[str] = typer.Option(None, help="reviews file from `pull` (default: annotate.reviews)"),
    out: Optional[str] = typer.Option(None, help="output records dir (default: annotate.out)"),
    metrics: Optional[str] = typer.Option(None, help="metrics JSON (default: annotate.metrics)"),
    executor: Optional[str] = typer.Option(None, "--executor", help="local | ray (default: params.yaml `executor`)"),
) -> None:
    """DVC stage `review` (and the benchmarks' review stages): merge a reviews file into records, no server needed."""
    import dataclasses

    from annotate.merge import load_reviews, merge_step, review_metrics
    from editkit import pipeline, store
    from editkit.executors import stage_executor

    p = _params(params)
    overrides = {"records": records, "reviews": reviews, "out": out, "metrics": metrics}
    p = dataclasses.replace(p, **{k: v for k, v in overrides.items() if v is not None})
    reviews = load_reviews(p.reviews)
    stats = pipeline.run_stage("review", p.records, p.out, pipeline.Deferred(merge_step, reviews),
                               executor=stage_executor(params, executor))
    metrics = {**review_metrics(p.out, reviews), "stage": stats.as_dict()}
    store.write_json(Path(p.metrics), metrics)
    typer.echo(f"review: {metrics['status']}")


@app.command()
def screenshot(sample_id: str = typer.Argument(..., help="a pushed sample's id"),
               out: str = typer.Option("docs/review.png", help="PNG to write"), params: str = PARAMS) -> None:
    """Capture the labeling page of one pushed sample with headless Chromium (needs `chromium`)."""
    import json

    from annotate import project, screenshot as shot, server

    p = _params(params)
    project_id = project.get_or_create_project(server.client(p), p)
    task_map = json.loads((p.state_dir / f"tasks-{project_id}.json").read_text())
    if sample_id not in task_map:
        raise typer.BadParameter(f"{sample_id} was not pushed to project {project_id}")
    typer.echo(shot.capture(p, project_id, task_map[sample_id]["task"], Path(out)))
