"""The single command line: `editkit <group> <command>`. Run `editkit --help`."""
from __future__ import annotations

import typer

from curate.cli import app as curate_app

app = typer.Typer(
    help="Content-consistent image editing: curate edit data with masks, review masks in Label Studio, "
    "benchmark editors, and post-train them with region-regularized RL.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
app.add_typer(curate_app, name="curate")


def _add_optional(module: str, name: str) -> None:
    """Sub-apps of downstream packages; each package owns its `cli.py`."""
    import importlib

    try:
        sub = importlib.import_module(module)
    except ModuleNotFoundError as error:  # package not written yet
        if error.name != module:
            raise
        return
    app.add_typer(sub.app, name=name)


_add_optional("annotate.cli", "annotate")
_add_optional("benchmarks.cli", "bench")
_add_optional("train.cli", "train")


@app.command()
def summary(metrics_dir: str = typer.Option("metrics", help="where the stages wrote their metrics JSON")) -> None:
    """Print what the last `dvc repro` produced and where."""
    from curate.summary import print_summary

    print_summary(metrics_dir)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
