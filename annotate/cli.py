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

        try:
            url = service.start(p)
        except service.BackendFailed:  # reaped already; a dead backend stays wired to no project
            service.disconnect_all(server.client(p), p, service.url(p))
            raise
        connected = service.connect_all(server.client(p), p, url)
        typer.echo(f"SAM2 ML backend: {url} (connected to {connected} project(s); new ones at push)")


@app.command()
def stop(params: str = PARAMS,
         force: bool = typer.Option(False, "--force", help="stop although reviewers have unsubmitted drafts: lists "
                                    "what would be lost; needs --discard too"),
         discard: bool = typer.Option(False, "--discard", help="with --force: stop and lose the listed drafts")) -> None:
    """Stop the server started by `serve` (by its recorded PID). Refuses while reviewers have unsubmitted drafts."""
    from annotate import project, server

    p = _params(params)
    if server.running_pid(p) is not None and not (force and discard):
        pending = project.unsaved_work(server.client(p), p.state_dir / "exports")
        if pending:
            listed = ", ".join(f"{title!r}: {len(drafts)}" for title, drafts in sorted(pending.items()))
            if not force:
                typer.echo(f"not stopping: unsubmitted drafts ({listed}); submit them in the browser, or "
                           "`editkit annotate pull` (keeps them as drafts) and `stop --force`", err=True)
                raise typer.Exit(2)
            typer.echo(f"stop --force would lose these unsubmitted drafts ({listed}):", err=True)
            for title, drafts in sorted(pending.items()):
                for draft in drafts:
                    typer.echo(f"  {title}: {draft['sample_id']} by {draft['reviewer']} (saved {draft['updated_at']})",
                               err=True)
            typer.echo("`editkit annotate pull` keeps them as drafts; `stop --force --discard` stops anyway", err=True)
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
    from annotate import merge, project, server
    from editkit import store

    p = _params(params)
    ds = _dataset(p, records, None, reviews, project_title)
    ls = server.client(p)
    project_id = project.find_project(ls, ds.project_title)
    if project_id is None:
        raise typer.BadParameter(f"no project {ds.project_title!r} on the server (push first)")
    exported = project.export(ls, project_id, p.state_dir / "exports" / f"{ds.slug}.json")
    earlier = [r for group in merge.load_reviews(ds.reviews).values() for r in group]
    found = project.with_earlier(earlier, project.reviews_from_export(exported, project.user_names(ls)))
    drafts = project.drafts_from_export(exported)
    store.write_json(ds.reviews, merge.reviews_document(found))  # stamped with the reviews' schema version
    store.write_json(p.state_dir / "drafts" / f"{ds.slug}.json", drafts)
    strokes = sum(1 for d in drafts if d.get("draft_strokes"))
    typer.echo(f"{len(found)} reviews of {len({r['sample_id'] for r in found})} samples by "
               f"{len({r['reviewer'] for r in found})} reviewer(s) -> {ds.reviews}; {len(drafts)} drafts "
               f"(unsubmitted, not merged{f'; {strokes} with brush strokes Submit has not rasterised' if strokes else ''})"
               f" -> {p.state_dir / 'drafts' / (ds.slug + '.json')}")
    summary = _team_summary(p, ds)
    if summary is not None:
        typer.echo(_summary_lines(summary, p.review.resolve))


def _team_summary(p, ds) -> dict | None:
    """Per-reviewer counts, agreement and open conflicts of a reviews file against the records' masks."""
    from annotate import reviewers
    from annotate.merge import load_reviews
    from editkit import rle, store

    grouped = load_reviews(ds.reviews)
    if not grouped:
        return None
    predicted = {}
    if Path(ds.records).is_dir():
        for _, shard in store.iter_records(ds.records):
            for record in shard:
                if record["id"] in grouped and record.get("mask") is not None:
                    predicted[record["id"]] = rle.decode(record["mask"])
    resolutions = {sid: reviewers.resolve(group, predicted.get(sid), p.review) for sid, group in grouped.items()}
    return reviewers.summary(resolutions, (r for group in grouped.values() for r in group))


def _summary_lines(summary: dict, policy: str) -> str:
    lines = ["reviewer: annotations / samples"]
    lines += [f"  {who}: {c['annotations']} / {c['samples']}" for who, c in summary["reviewers"].items()]
    overall = summary["agreement"].get("all")
    if overall:
        iou = "n/a" if overall["mean_mask_iou"] is None else f"{overall['mean_mask_iou']:.3f}"
        lines.append(f"agreement over {overall['pairs']} reviewer pair(s) of {summary['multi_reviewed']} sample(s): "
                     f"verdicts {100 * overall['verdict_agreement']:.0f}%, mean mask IoU {iou}")
        lines += [f"  {pair}: verdicts {100 * a['verdict_agreement']:.0f}% of {a['pairs']}"
                  + ("" if a["mean_mask_iou"] is None else f", mask IoU {a['mean_mask_iou']:.3f}")
                  for pair, a in summary["agreement"].items() if pair != "all"]
    if summary.get("overwritten_before_pull"):
        lost = summary["overwritten_before_pull"]
        lines.append(f"warning: {len(lost)} annotation(s) were updated by another reviewer before their author's "
                     f"version was pulled (that version is lost): {', '.join(lost[:20])}; pull more often")
    queue = summary["adjudication_queue"]
    lines.append(f"open conflicts ({policy}): {summary['open_conflicts']}"
                 + (f" -> adjudicate: {', '.join(queue[:20])}{' ...' if len(queue) > 20 else ''}" if queue else ""))
    return "\n".join(lines)


@app.command("add-reviewer")
def add_reviewer(email: str = typer.Argument(..., help="the reviewer's login (an email address)"),
                 params: str = PARAMS) -> None:
    """Create a reviewer's Label Studio login in the running server's organisation (or reset its password). The
    password is $EDITKIT_REVIEWER_PASSWORD, else generated and printed once for you to hand over."""
    import os
    import secrets

    from annotate import server

    p = _params(params)
    if server.running_pid(p) is None:
        raise typer.BadParameter("no server of ours is running (`editkit annotate serve` first)")
    given = os.environ.get("EDITKIT_REVIEWER_PASSWORD")
    password = given or secrets.token_urlsafe(12)
    user_id = server.add_user(p, email, password)
    typer.echo(f"reviewer {email} (user {user_id}) can log in at {server.base_url(p)}"
               + ("" if given else f" with the password {password}"))


@app.command()
def report(params: str = PARAMS, records: Optional[str] = RECORDS, reviews: Optional[str] = REVIEWS,
           project_title: Optional[str] = typer.Option(None, "--project", help=PROJECT.help),
           as_json: bool = typer.Option(False, "--json", help="print the summary as JSON")) -> None:
    """The team's review report (no server needed): per-reviewer counts, agreement between reviewers of the same
    task (verdicts, mask IoU) and the open conflicts waiting for adjudication (annotate.review)."""
    import json

    p = _params(params)
    ds = _dataset(p, records, None, reviews, project_title)
    try:
        summary = _team_summary(p, ds)
    except ValueError as error:
        raise typer.BadParameter(str(error)) from None
    if summary is None:
        typer.echo(f"no reviews in {ds.reviews} (`editkit annotate pull` first)")
        return
    typer.echo(json.dumps(summary, indent=2) if as_json else _summary_lines(summary, p.review.resolve))


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
        return {**review_metrics(records_dir, loaded, p.review), "stage": stats.as_dict()}

    stats = pipeline.run_stage("review", ds.records, out, pipeline.Deferred(merge_step, loaded, p.review),
                               executor=stage_executor(params, executor), metrics_file=Path(metrics_path),
                               summarize=summarize)
    result = stats.metrics
    typer.echo(f"review: {result['status']} ({ds.reviews}); open conflicts ({p.review.resolve}): "
               f"{result['open_conflicts']}")


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
