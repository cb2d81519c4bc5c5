"""The single command line: `editkit <group> <command>`. Run `editkit --help`.

The packages' groups are named by ``"package.cli:app"`` strings and imported only when they run or ``--help`` lists
them, so the core never imports the packages (the import contracts in pyproject.toml forbid it). A new group is one
line: ``app.add_lazy_typer("package.cli:app", name="group")``, or ``app.add_typer(app_of_the_core, name=...)`` for a
group that lives in the core.
"""
from __future__ import annotations

import typer

from editkit.cli_app import command_group
from editkit.registry import import_dotted

# group name -> its Typer app (listed by `editkit --help` in this order)
GROUPS = {
    "curate": "curate.cli:app",
    "annotate": "annotate.cli:app",
    "bench": "benchmarks.cli:app",
    "train": "train.cli:app",
    "rrm": "train.rrm.cli:app",
    "export": "curate.fiftyone_export.cli:app",
}

app = command_group(
    help="Content-consistent image editing: curate edit data with masks, review masks in Label Studio, "
    "benchmark editors, and post-train them with region-regularized RL.",
)
for _name, _target in GROUPS.items():
    app.add_lazy_typer(_target, name=_name)
app.add_lazy_typer("editkit.config_cli:app", name="config")


@app.command()
def summary(metrics_dir: str = typer.Option("metrics", help="where the stages wrote their metrics JSON")) -> None:
    """Print what the last `dvc repro` produced and where."""
    import_dotted("curate.summary:print_summary", "command")(metrics_dir)


@app.command()
def view(stage: str = typer.Argument(..., help="the stage whose records to show, e.g. select or masks"),
         data: str = typer.Option("data", help="the pipeline's data directory"),
         out: str = typer.Option(None, help="gallery folder (default <data>/gallery/<stage>)"),
         progress: bool = typer.Option(True, help="show a progress bar")) -> None:
    """Write a static HTML gallery of a stage's records (opens from disk; filters, sorting, paging)."""
    import_dotted("curate.gallery:view", "command")(stage, data, out, progress=progress)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
