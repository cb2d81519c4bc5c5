"""ImgEdit (``sysuyy/ImgEdit``): per-task parquet files whose image columns are lists of paths into unpacked tars.

Layout: ``Parquet/<task>_partN.parquet`` with ``input_images`` (list of paths), ``output_images`` (list of paths) and
``prompt``; multi-turn files hold a ``data`` column, a list of such turns. The images come from the tars
(``Singleturn/<task>_partN.tar.split.*``, unpacked into the dataset folder); their paths resolve against the dataset
folder (or its ``Singleturn/`` / ``Multiturn/``), never outside it.

``path`` is the dataset folder (or one parquet file, whose dataset folder is the parent of ``Parquet/``); ``split``
selects a task by its file name (``add``, ``remove``, ...; none = all). The task gives the edit type (ImgEdit's names
are ours). ``origin_key`` is the first output path without its extension (unique per turn). A row with more than one
input image is flagged ``extra_inputs_unused`` (only the first is the source).
"""
from __future__ import annotations

import re
from pathlib import Path

from curate.sources import RawPair
from curate.sources.presets import register_preset, tables
from curate.sources.presets.base import TablePreset, map_edit_type, table, text_list

EXTRA_INPUTS_FLAG = "extra_inputs_unused"
TASKS = table({name: name for name in ("add", "remove", "replace", "adjust", "action", "background", "style",
                                       "extract", "compose")} | {"alter": "adjust"})
_TASK = re.compile(r"^(?P<task>.+?)(?:_part\d+)?$")


def task_of(path: Path) -> str:
    return _TASK.match(path.stem).group("task")


@register_preset("imgedit")
class ImgEdit(TablePreset):
    hub_id = ""  # the hub repository holds tars and parquet files, not a loadable dataset: use a local copy
    dataset = "sysuyy/ImgEdit"
    required = ()

    def open(self):
        if not self.path:
            raise ValueError("ingest.preset.path: imgedit needs a local copy of sysuyy/ImgEdit (its Parquet/ files "
                             "and the unpacked image tars)")
        path = Path(self.path)
        if path.is_file():
            files, root = [path], path.parent.parent if path.parent.name.lower() == "parquet" else path.parent
        elif path.is_dir():
            files, root = tables.data_files(path, (".parquet", ".jsonl")), path
        else:
            raise ValueError(f"ingest.preset.path: {path} does not exist")
        if not files:
            raise ValueError(f"ingest.preset.path: no ImgEdit parquet files under {path}")
        if self.params.split is not None:
            tasks = sorted({task_of(f) for f in files})
            files = [f for f in files if task_of(f) == self.params.split]
            if not files:
                raise ValueError(f"ingest.preset.split: task {self.params.split!r} not in {path}; "
                                 f"choose one of: {', '.join(tasks)}")
        self.roots = [root, root / "Singleturn", root / "Multiturn"]
        columns = tables._columns(files[0])
        if not ({"input_images", "output_images"} <= set(columns) or "data" in columns):
            raise ValueError(f"ingest.preset.path: {files[0]} is not ImgEdit: expected columns input_images, "
                             f"output_images, prompt (or data for multi-turn), found {', '.join(columns)}")
        return tables.Table(root=root, files=files, columns=columns)

    def pairs(self):
        for path in self.table.files:
            for index, row in enumerate(tables.iter_file(path)):
                turns = row["data"] if isinstance(row.get("data"), list) else [row]
                for turn_number, turn in enumerate(turns, start=1):
                    key = f"{path.stem}/row {index}" + (f"/turn {turn_number}" if len(turns) > 1 else "")
                    yield self.turn(turn if isinstance(turn, dict) else {}, key, task_of(path), index)

    def turn(self, row, fallback_key, task, index):
        errors: list[str] = []
        inputs, outputs = _paths(row.get("input_images")), _paths(row.get("output_images"))
        key = str(Path(outputs[0]).with_suffix("")) if outputs else fallback_key
        pair = RawPair(self.origin, key, row.get("prompt"), None, None,
                       instruction_variants=text_list(row.get("prompt")),
                       meta={"row": index, "input_images": inputs, "output_images": outputs})
        if not inputs or not outputs:
            errors.append(f"missing {'source' if not inputs else 'edited'} image: empty path list")
        else:
            pair.source = self.read_path(inputs[0], "source", errors, self.roots)
            pair.edited = self.read_path(outputs[0], "edited", errors, self.roots)
        if len(inputs) > 1:
            pair.flags.append(EXTRA_INPUTS_FLAG)
        map_edit_type(row.get("edit_type") or task, TASKS, pair)
        pair.error = errors[0] if errors else None
        return pair


def _paths(value) -> list[str]:
    if isinstance(value, str):
        return [value] if value else []
    return [str(v) for v in value or [] if isinstance(v, str) and v]
