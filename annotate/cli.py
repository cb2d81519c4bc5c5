"""`editkit annotate ...`: review the pipeline's masks in a local Label Studio and merge the reviews back."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from annotate.study.cli import app as study_app
from editkit.cli_app import command_group

app = command_group(help="Mask review in Label Studio: serve -> push -> (review in the browser) -> pull -> merge "
                    "(the `review` DVC stage).")

PARAMS = typer.Option("params.yaml", help="params file; section `annotate`")

app.add_typer(study_app, name="study")
RECORDS = typer.Option(None, help="records dir (default: annotate.records); one project + reviews file per dataset")
IMAGES = typer.Option(None, help="image shards (default: annotate.images, or the images/ folder beside --records)")
REVIEWS = typer.Option(None, help="reviews file (default: annotate.reviews, or reviews/<dataset>.json)")
PROJECT = typer.Option(None, help="Label Studio project title (default: annotate.project_title[: <dataset>])")


def _params(path: str):
    from annotate.settings import load_params

    return load_params(path)


def _dataset(p, records, images, reviews, project):
    from annotate import datasets

    try:
        return datasets.resolve(p, records, images, reviews, project)
    except ValueError as error:
        raise typer.BadParameter(str(error)) from None


@app.command()
def serve(params: str = PARAMS, port: Optional[int] = typer.Option(None, help="port (default: annotate.port)"),
          ml_backend: bool = typer.Option(False, "--ml-backend", help="also start the SAM2 ML backend and connect "
                                          "it to every review project (annotate.ml_backend_*)")) -> None:
    """Start Label Studio on 127.0.0.1 (installing it into its own virtualenv on first use) and wait until healthy."""
    import dataclasses

    from annotate import server

    p = _params(params)
    if port is not None:
        if not 1 <= port <= 65535:
            raise typer.BadParameter(f"--port must be 1..65535, got {port}")
        p = dataclasses.replace(p, port=port)
    running = server.running_port(p)
    if running is not None and port is not None and running != port:
        raise typer.BadParameter(f"our server already runs on port {running}; `editkit annotate stop` first")
    pid = server.start(p)
    creds = server.credentials(p)
    typer.echo(f"Label Studio is up: {server.base_url(p)}  (pid {pid}; stop with `editkit annotate stop`)")
    typer.echo(f"login: {creds.username}; password: $EDITKIT_LS_PASSWORD or {p.state_dir / 'credentials.json'} (0600)")
    if ml_backend:
        from annotate.ml_backend import service

        url = service.start(p)
        connected = service.connect_all(server.client(p), p, url)
        typer.echo(f"SAM2 ML backend: {url} (connected to {connected} project(s); new ones at push)")


@app.command()
def stop(params: str = PARAMS, force: bool = typer.Option(False, "--force", help="stop even with unsaved drafts")) -> None:
    """Stop the server started by `serve` (by its recorded PID). Refuses while reviewers have unsubmitted drafts."""
    from annotate import project, server

    p = _params(params)
    if server.running_pid(p) is not None and not force:
        pending = project.unsaved_work(server.client(p), p.state_dir / "exports")
        if pending:
            listed = ", ".join(f"{title!r}: {n}" for title, n in sorted(pending.items()))
            typer.echo(f"not stopping: unsubmitted drafts ({listed}); submit them in the browser, or "
                       "`editkit annotate pull` (keeps them as drafts) and `stop --force`", err=True)
            raise typer.Exit(2)
    from annotate.ml_backend import service

    service.stop(p)
    typer.echo("stopped" if server.stop(p) else "no server of ours was running")


@app.command()
def push(params: str = PARAMS, records: Optional[str] = RECORDS, images: Optional[str] = IMAGES,
         project_title: Optional[str] = typer.Option(None, "--project", help=PROJECT.help),
         limit: int = typer.Option(0, help="push at most this many records (0 = all)")) -> None:
    """Create/reuse the dataset's project and push records as tasks with their mask as a prediction. Safe to repeat:
    the server's own task list decides what is new."""
    import itertools

    from annotate import project, server
    from editkit import store

    p = _params(params)
    ds = _dataset(p, records, images, None, project_title)
    if not store.list_shards(ds.records):
        raise typer.BadParameter(f"no record shards in {ds.records}")
    if not Path(ds.images).is_dir():
        raise typer.BadParameter(f"no image shards folder {ds.images} (pass --images)")
    rows = (r for _, shard in store.iter_records(ds.records) for r in shard)
    if limit:
        rows = itertools.islice(rows, limit)
    ls = server.client(p)
    counts = project.push(ls, p, rows, store.ImageStore(ds.images), title=ds.project_title)
    from annotate.ml_backend import service

    service.connect_if_running(ls, p, project.find_project(ls, ds.project_title))
    typer.echo(f"project {ds.project_title!r}: " + " ".join(f"{k}={v}" for k, v in counts.items()))


@app.command()
def pull(params: str = PARAMS, records: Optional[str] = RECORDS, reviews: Optional[str] = REVIEWS,
         project_title: Optional[str] = typer.Option(None, "--project", help=PROJECT.help)) -> None:
    """Export the annotations (raw JSON under the data folder), write the reviews file the `review` stage reads and
    the drafts (unsubmitted work, never merged) beside the raw export."""
    from annotate import project, server
    from editkit import store

    p = _params(params)
    ds = _dataset(p, records, None, reviews, project_title)
    ls = server.client(p)
    project_id = project.find_project(ls, ds.project_title)
    if project_id is None:
        raise typer.BadParameter(f"no project {ds.project_title!r} on the server (push first)")
    exported = project.export(ls, project_id, p.state_dir / "exports" / f"{ds.slug}.json")
    found = project.reviews_from_export(exported)
    drafts = project.drafts_from_export(exported)
    store.write_json(ds.reviews, found)
    store.write_json(p.state_dir / "drafts" / f"{ds.slug}.json", drafts)
    typer.echo(f"{len(found)} reviews -> {ds.reviews}; {len(drafts)} drafts (not merged) -> "
               f"{p.state_dir / 'drafts' / (ds.slug + '.json')}")


@app.command()
def merge(
    params: str = PARAMS,
    records: Optional[str] = typer.Option(None, help="records to merge into (default: annotate.records)"),
    reviews: Optional[str] = REVIEWS,
    out: Optional[str] = typer.Option(None, help="output records dir (default: annotate.out, or "
                                      "<records parent>_reviewed/records)"),
    metrics: Optional[str] = typer.Option(None, help="metrics JSON (default: annotate.metrics, or "
                                          "metrics/<dataset>_review.json)"),
    images: Optional[str] = typer.Option(None, help="accepted for symmetry with push; merge needs no images"),
    project_title: Optional[str] = typer.Option(None, "--project", help="accepted for symmetry; needs no server"),
    executor: Optional[str] = typer.Option(None, "--executor", help="local | ray (default: params.yaml `executor`)"),
) -> None:
    """DVC stage `review` (and the benchmarks' review stages): merge a reviews file into records, no server needed."""
    from annotate.merge import load_reviews, merge_step, review_metrics
    from editkit import pipeline
    from editkit.executors import stage_executor

    p = _params(params)
    ds = _dataset(p, records, images, reviews, project_title)
    out = out or ds.out
    metrics_path = metrics or ds.metrics
    try:
        loaded = load_reviews(ds.reviews)
    except ValueError as error:
        raise typer.BadParameter(str(error)) from None
    def summarize(stats, records_dir: Path) -> dict:  # written with the records, in one atomic step
        return {**review_metrics(records_dir, loaded), "stage": stats.as_dict()}

    stats = pipeline.run_stage("review", ds.records, out, pipeline.Deferred(merge_step, loaded),
                               executor=stage_executor(params, executor), metrics_file=Path(metrics_path),
                               summarize=summarize)
    result = stats.metrics
    typer.echo(f"review: {result['status']} ({ds.reviews})")


@app.command()
def screenshot(sample_id: str = typer.Argument(..., help="a pushed sample's id"),
               out: str = typer.Option("docs/review.png", help="PNG to write"), params: str = PARAMS,
               project_title: Optional[str] = typer.Option(None, "--project", help="project (default: annotate's)")) -> None:
    """Capture the labeling page of one pushed sample with headless Chromium (needs `chromium`)."""
    from annotate import project, screenshot as shot, server

    p = _params(params)
    ls = server.client(p)
    title = project_title or p.project_title
    project_id = project.find_project(ls, title)
    tasks = project.server_tasks(ls, project_id) if project_id is not None else {}
    if sample_id not in tasks:
        raise typer.BadParameter(f"{sample_id} was not pushed to project {title!r}")
    typer.echo(shot.capture(p, project_id, tasks[sample_id][0]["task"], Path(out)))
