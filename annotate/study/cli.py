"""`editkit annotate study push|pull`: a blinded pairwise rating study of two editors on a benchmark."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from editkit.cli_app import command_group

app = command_group(help="Blinded pairwise rating study: push two editors' outputs on a benchmark, pull the "
                    "win/tie/loss table, plot, agreement and pairwise preferences.")

PARAMS = typer.Option("params.yaml", help="params file; section `annotate` (server, data folder)")
NAME = typer.Option(None, "--name", help="study name (default: <dataset>_<a-name>_vs_<b-name>)")


def _study_file(params, name: str) -> Path:
    return Path(params.reviews).parent / "studies" / f"{name}.json"


@app.command()
def push(
    bench: str = typer.Option(..., help="benchmark folder with records/ and images/ (e.g. data/bench/gedit)"),
    a: str = typer.Option(..., help="editor A's outputs (a `bench evaluate` run folder, or <id>.png files)"),
    b: str = typer.Option(..., help="editor B's outputs"),
    a_name: str = typer.Option("A", help="editor A's name (recorded, never shown to raters)"),
    b_name: str = typer.Option("B", help="editor B's name"),
    raters: int = typer.Option(3, min=1, help="ratings per pair (Label Studio overlap)"),
    seed: int = typer.Option(0, help="seeds the left/right draw per item"),
    name: Optional[str] = NAME,
    params: str = PARAMS,
) -> None:
    """Create/reuse the study project and push one task per item that both editors have an output for."""
    from annotate import datasets, server
    from annotate.settings import load_params
    from annotate.study import project as study
    from editkit import store

    p = load_params(params)
    records_dir, images_dir = Path(bench) / "records", Path(bench) / "images"
    for folder in (records_dir, images_dir, Path(a), Path(b)):
        if not folder.is_dir():
            raise typer.BadParameter(f"no folder {folder}")
    name = name or f"{datasets.dataset_name(records_dir)}_{a_name}_vs_{b_name}"
    import hashlib

    # the folder name shows in image URLs: it must not carry the study's (editor) names
    image_dir = p.state_dir / "images" / "studies" / hashlib.sha1(name.encode()).hexdigest()[:12]
    records = (r for _, shard in store.iter_records(records_dir) for r in shard)
    items = study.plan(records, store.ImageStore(images_dir), Path(a), Path(b), image_dir, seed)
    if not items:
        raise typer.BadParameter(f"no item of {records_dir} has an output in both {a} and {b}")
    title = f"editkit rating study {image_dir.name}"  # raters see the title: no editor names in it
    ls = server.client(p)
    titles = study.rater_titles(title, raters)
    for rater_title in titles:  # one project per rater: nobody's answer can replace another's
        project_id = study.get_or_create(ls, rater_title, 1, p.state_dir / "images")
        counts = study.push(ls, project_id, items, image_dir, Path(p.data_root))
    store.write_json(_study_file(p, name), {"name": name, "projects": titles, "seed": seed, "raters": raters,
                                           "a": {"name": a_name, "outputs": a}, "b": {"name": b_name, "outputs": b},
                                           "bench": bench, "items": items})
    typer.echo(f"study {name!r}: {counts['created']} new tasks, {counts['unchanged']} already there; A shown left "
               f"on {100 * study.side_balance(items):.0f}% of {len(items)} items; {raters} raters per pair, each in their own "
               f"project ({titles[0]!r} ...); assignment in {_study_file(p, name)}")


@app.command()
def pull(name: str = typer.Option(..., "--name", help="the study's name (see `study push`)"), params: str = PARAMS,
         out: Optional[str] = typer.Option(None, help="results folder (default: results/study/<name>)"),
         n_boot: int = typer.Option(2000, help="bootstrap resamples")) -> None:
    """Export the ratings and write report.json, table.md, plot.png and preferences.jsonl."""
    from annotate import server
    from annotate.project import export, user_names
    from annotate.settings import load_params
    from annotate.study import project as study, report, stats
    from editkit import store

    p = load_params(params)
    path = _study_file(p, name)
    if not path.exists():
        raise typer.BadParameter(f"no study {name!r} ({path} is missing; run `study push` first)")
    meta = json.loads(path.read_text())
    ls = server.client(p)
    titles = meta.get("projects") or [meta["project"]]  # older studies: one project with overlap
    ids = {x.title: int(x.id) for x in ls.projects.list()}
    missing = [t for t in titles if t not in ids]
    if missing:
        raise typer.BadParameter(f"no project {missing[0]!r} on the server")
    out_dir = Path(out or f"results/study/{name}")
    users = user_names(ls)
    ratings = []
    for slot, title in enumerate(titles, start=1):
        exported = export(ls, ids[title], p.state_dir / "exports" / f"study-{name}-{slot}.json")
        ratings += study.ratings_from_export(exported, meta["items"], slot if "projects" in meta else None, users)
    summary = stats.report(ratings, n_boot=n_boot)
    a_name, b_name = meta["a"]["name"], meta["b"]["name"]
    store.write_json(out_dir / "report.json", {"study": name, "a": a_name, "b": b_name, **summary})
    (out_dir / "table.md").write_text(report.table(summary, a_name, b_name))
    report.plot(summary, a_name, b_name, out_dir / "plot.png")
    report.preferences(ratings, meta["items"], a_name, b_name, out_dir / "preferences.jsonl")
    typer.echo(report.table(summary, a_name, b_name) + f"-> {out_dir}/ (report.json, table.md, plot.png, "
               f"preferences.jsonl: {len(ratings)} ratings)")
