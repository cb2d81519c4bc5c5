"""The single command line: `editkit <group> <command>`. Run `editkit --help`."""
from __future__ import annotations

import typer

from annotate.cli import app as annotate_app
from benchmarks.cli import app as bench_app
from curate.cli import app as curate_app
from editkit.cli_app import command_group
from train.cli import app as train_app
from train.rrm.cli import app as rrm_app

app = command_group(
    help="Content-consistent image editing: curate edit data with masks, review masks in Label Studio, "
    "benchmark editors, and post-train them with region-regularized RL.",
)
app.add_typer(curate_app, name="curate")
app.add_typer(annotate_app, name="annotate")
app.add_typer(bench_app, name="bench")
app.add_typer(train_app, name="train")
app.add_typer(rrm_app, name="rrm")


@app.command()
def summary(metrics_dir: str = typer.Option("metrics", help="where the stages wrote their metrics JSON")) -> None:
    """Print what the last `dvc repro` produced and where."""
    from curate.summary import print_summary

    print_summary(metrics_dir)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
