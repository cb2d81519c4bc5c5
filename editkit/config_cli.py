"""`editkit config`: what every setting means, read from the config dataclasses' metadata.

``editkit config explain train/configs/kontext.yaml`` prints each field of the trainer config with its type,
default, help and the file's value; ``editkit config explain masks`` does the same for the ``masks`` section of
``params.yaml``. ``editkit config reference`` prints the Markdown of ``docs/config-reference.md``.

The configs are named here by module path and loaded on demand, so the core imports none of the packages.
"""
from __future__ import annotations

import dataclasses
import importlib
import re
from pathlib import Path
from typing import Any, Optional

import typer

from editkit.cli_app import command_group
from editkit.config_meta import FieldInfo, field_infos
from editkit.errors import UserError

# params.yaml section -> the dataclass its stage loads it into
SECTIONS: dict[str, str] = {
    "sample": "curate.sources.sample:SampleParams",
    "ingest": "curate.stages.ingest:IngestParams",
    "rewrite": "curate.stages.rewrite:RewriteParams",
    "masks": "curate.stages.masks:MasksParams",
    "score": "curate.stages.score:ScoreParams",
    "select": "curate.stages.select:SelectParams",
    "export": "curate.stages.export:ExportParams",
    "bench": "benchmarks.build:BenchParams",
    "annotate": "annotate.settings:AnnotateParams",
    "fiftyone": "curate.fiftyone_export.settings:FiftyOneParams",
    "executor": "editkit.executors:ExecutorConfig",
}

# YAML config files -> (dataclass, what reads them)
FILES: dict[str, tuple[str, str]] = {
    "train": ("train.config:TrainConfig", "editkit train run|show-config --config FILE"),
    "pretrain": ("train.experiment.pretrain:PretrainConfig", "editkit train pretrain --config FILE"),
    "ablation": ("train.experiment.ablation:AblationConfig", "editkit train ablation --config FILE"),
    "rrm-sft": ("train.rrm.config:SFTRunConfig", "editkit rrm sft --config FILE"),
    "rrm-gcpo": ("train.rrm.config:GCPORunConfig", "editkit rrm gcpo --config FILE"),
    "rrm-make-sft-data": ("train.rrm.teacher:MakeSFTConfig", "editkit rrm make-sft-data --config FILE"),
}

# nested dataclasses listed with a list field (not a section): field key -> dataclass
LIST_ITEMS: dict[str, str] = {"ablation.arms": "train.experiment.ablation:ArmConfig"}

app = command_group(help="Explain the settings of params.yaml sections and trainer configs; print the reference.")


def resolve(spec: str) -> type:
    module, name = spec.split(":")
    return getattr(importlib.import_module(module), name)


def _kind_of(values: dict[str, Any], path: Path) -> str:
    """The config kind of a YAML mapping: the first (in FILES order) whose fields know every top-level key."""
    for kind, (spec, _) in FILES.items():
        names = {f.name for f in dataclasses.fields(resolve(spec))} | ({"smoke"} if kind == "ablation" else set())
        if set(values) <= names:
            return kind
    raise UserError(f"{path}: not a config this project reads (kinds: {', '.join(FILES)}; pass --kind)")


def _load(target: str, kind: Optional[str], params: Path) -> tuple[type, Any, str, str]:
    """(dataclass, loaded instance, key prefix, title) for a params.yaml section name or a YAML file."""
    from editkit import config

    if target in SECTIONS and not Path(target).is_file():
        cls = resolve(SECTIONS[target])
        return cls, config.load_section(cls, target, params), "", f"params.yaml section `{target}` ({params})"
    path = Path(target)
    if not path.is_file():
        raise UserError(f"{target}: neither a params.yaml section ({', '.join(SECTIONS)}) nor a config file")
    values = config.load_yaml(path)
    kind = kind or _kind_of(values, path)
    if kind not in FILES:
        raise UserError(f"--kind must be one of {', '.join(FILES)}, got {kind!r}")
    cls = resolve(FILES[kind][0])
    instance = _load_file(kind, cls, path, values)
    return cls, instance, "", f"{path} ({kind}: {cls.__name__})"


def _load_file(kind: str, cls: type, path: Path, values: dict[str, Any]) -> Any:
    from editkit import config

    if kind == "train":
        return resolve("train.config:load_config")(path)
    if kind == "ablation":
        return resolve("train.experiment.ablation:load_ablation_config")(path)
    return config.load_file(cls, path)


def rows_of(cls: type, instance: Any = None, prefix: str = "") -> list[FieldInfo]:
    """Every field below ``cls`` (list-of-section fields such as ``arms`` expanded to ``arms[].name`` ...)."""
    rows = field_infos(cls, prefix, instance)
    out: list[FieldInfo] = []
    for row in rows:
        out.append(row)
        item = _list_item(cls, row)
        if item is not None:
            out.extend(field_infos(item, f"{row.name}[].", None))
    return out


def _list_item(cls: type, row: FieldInfo) -> type | None:
    for key, spec in LIST_ITEMS.items():
        kind, field_name = key.split(".")
        if FILES.get(kind, ("",))[0].endswith(f":{cls.__name__}") and row.name == field_name:
            return resolve(spec)
    return None


def _value_at(instance: Any, key: str) -> Any:
    value = instance
    for part in key.split("."):
        if part.endswith("[]"):
            return "(per item)"
        if value is None:
            return None
        value = getattr(value, part) if dataclasses.is_dataclass(value) else value
    return value


def _show(value: Any) -> str:
    if dataclasses.is_dataclass(value):
        value = dataclasses.asdict(value)
    text = repr(value) if isinstance(value, str) else str(value)
    return text if len(text) <= 80 else text[:77] + "..."


@app.command()
def explain(
    target: str = typer.Argument(..., help="a params.yaml section name (e.g. masks) or a config YAML file"),
    kind: Optional[str] = typer.Option(None, help=f"the config kind of a YAML file ({', '.join(FILES)}); "
                                                  "default: guessed from its keys"),
    params: Path = typer.Option(Path("params.yaml"), help="the params file a section name is read from"),
) -> None:
    """Print every field: key, type, range, current value, default and help."""
    cls, instance, prefix, title = _load(target, kind, params)
    typer.echo(f"{title}\n")
    for row in rows_of(cls, None, prefix):
        if row.section:
            typer.echo(f"[{row.name}]  {row.help}")
            continue
        current = _value_at(instance, row.name)
        limits = f", {row.range}" if row.range else ""
        same = current == row.default or current == "(per item)"
        default = "" if same else f"   (default {_show(row.default)})"
        typer.echo(f"{row.name} ({row.type}{limits}) = {_show(current)}{default}")
        typer.echo(f"    {row.help}")


@app.command()
def reference() -> None:
    """Print the Markdown config reference (docs/config-reference.md is this output)."""
    typer.echo(render_reference(), nl=False)


def render_reference() -> str:
    """The Markdown of docs/config-reference.md, generated from the config dataclasses' metadata."""
    lines = [
        "# Config reference",
        "",
        "Every setting of `params.yaml` and of the trainer configs, generated from the config classes "
        "(`editkit config reference` prints it; a test fails when this page is stale). "
        "`editkit config explain <section|file>` prints the same with a file's current values.",
        "",
        "A range is checked when the file is loaded: a value outside it ends the command with one line naming the "
        "file and the key (exit code 2). Floats must be finite unless said otherwise. A quoted list of choices "
        "means exactly one of them.",
        "",
        "## params.yaml",
        "",
    ]
    for section, spec in SECTIONS.items():
        cls = resolve(spec)
        lines += [f"### `{section}`", "", f"`{cls.__module__}.{cls.__name__}`", ""]
        lines += _table(rows_of(cls), prefix=f"{section}.")
    lines += ["## Config files", ""]
    for kind, (spec, reader) in FILES.items():
        cls = resolve(spec)
        lines += [f"### {kind}", "", f"`{cls.__module__}.{cls.__name__}`, read by `{reader}`.", ""]
        lines += _table(rows_of(cls))
    return "\n".join(lines).rstrip("\n") + "\n"


def _table(rows: list[FieldInfo], prefix: str = "") -> list[str]:
    out = ["| Key | Type | Default | Range | Meaning |", "| --- | --- | --- | --- | --- |"]
    for row in rows:
        default = "" if row.section else f"`{_show(row.default)}`"
        out.append(f"| `{prefix}{row.name}` | {_cell(row.type)} | {_cell(default)} | {_cell(row.range)} | "
                   f"{_cell(row.help)} |")
    return out + [""]


def _cell(text: str) -> str:
    # a command named in a help text is quoted, not a code span: the page lists settings, it runs nothing
    text = re.sub(r"`((?:editkit|dvc|make|python|accelerate|torchrun) [^`]*)`", r'"\1"', text)
    for raw, escaped in (("|", "\\|"), ("<", "&lt;"), (">", "&gt;"), ("*", "\\*"), ("\n", " ")):
        text = text.replace(raw, escaped)
    return text
