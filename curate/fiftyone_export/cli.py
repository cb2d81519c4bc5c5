"""`editkit export ...`: datasets for other tools (FiftyOne)."""
from __future__ import annotations

import typer

from editkit.cli_app import command_group

app = command_group(help="Export the curated data to other tools: a FiftyOne dataset (in FiftyOne's own virtualenv).")


@app.command()
def fiftyone(stage: str = typer.Argument(..., help="the stage whose records to export, e.g. select or masks; "
                                                    "`export` for the exported dataset (data/export/dataset)"),
             data: str = typer.Option("data", help="the pipeline's data directory"),
             name: str = typer.Option(None, help="the FiftyOne dataset's name (default <fiftyone.name_prefix>-<stage>)"),
             images: str = typer.Option(None, help="the ingest image shards (default <data>/ingest/images)"),
             params: str = typer.Option("params.yaml", help="the params file (sections fiftyone and score.clip)"),
             embeddings: bool = typer.Option(True, help="attach CLIP embeddings (score.clip's model)"),
             progress: bool = typer.Option(True, help="show progress bars")) -> None:
    """Build a FiftyOne dataset: source/edited slices, masks, scores, reasons and flags as tags, CLIP similarity."""
    from curate.fiftyone_export import command

    command(stage, data, name=name, images=images, params_file=params, embeddings=embeddings, progress=progress)


@app.command(name="fiftyone-app")
def fiftyone_app(name: str = typer.Argument(..., help="a dataset built by `editkit export fiftyone`"),
                 port: int = typer.Option(5151, help="the App's port, bound to 127.0.0.1"),
                 params: str = typer.Option("params.yaml", help="the params file (section fiftyone)")) -> None:
    """Open a built dataset in the FiftyOne App on 127.0.0.1 until Ctrl-C."""
    from curate.fiftyone_export import app as serve

    serve(name, port, params)
