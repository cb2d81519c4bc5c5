"""GPT-Image-Edit-1.5M (``UCSC-VLAA/GPT-Image-Edit-1.5M``): HQ-Edit / OmniEdit / UltraEdit inputs re-edited with
GPT-Image-1, images in webdataset tar parts, pairs described by separate JSON annotation files.

Layout: ``gpt-edit/<source>.tar.gz.partNNN`` (unpack with ``cat <source>.tar.gz.part* | tar xz``: folders
``hqedit/edit/{input,output}/``, ``omniedit/...``, ``ultraedit/...``) and the annotation lists
``training_json/<name>.json``; a ``data.txt`` (lines ``<image root>,<annotation json>,<flag>``, the format of the
dataset's training code) says which folder each annotation file's paths are relative to. Without a ``data.txt``,
the published file names map to their folders (:data:`ROOTS`).

An annotation record has ``input`` / ``output`` (paths relative to its image root), ``instruction``, and
``dataset_source``, ``task``, ``instruction_type`` (original / rewrite / complex), ``input_description``, and for
rewritten OmniEdit instructions ``instruction_original``; llava-style records (``image`` = [input, output] and
``conversations``) are read too. Pairing through the annotations (not per tar member) gives one pair per edit.
``origin_key`` is ``<annotation file stem>/<id or row N>``. Every instruction (rewritten and original) is kept in
``instruction_variants``; the primary one is ``instruction``, the text the dataset trains on.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Iterator

from curate.sources import RawPair
from curate.sources.presets import register_preset, tables
from curate.sources.presets.base import TablePreset, map_edit_type, table, text_list
from curate.sources.presets.omniedit import TASKS as OMNIEDIT_TASKS

# annotation file -> its image root inside gpt-edit/ (the dataset card's data.txt example)
ROOTS = {
    "hqedit_gpt_edit.json": "hqedit/edit",
    "hqedit_gpt_generate.json": "hqedit/generate",
    "omniedit_gpt.json": "omniedit",
    "omniedit_gpt_rewrite.json": "omniedit",
    "complexedit_gpt.json": "omniedit/complex-edit",
    "ultraedit_gpt.json": "ultraedit",
}
TASKS = table({**OMNIEDIT_TASKS, **{name: name for name in ("add", "remove", "replace", "background", "style")},
               "color": "recolor", "color_change": "recolor", "change_color": "recolor", "text": "text"})
NOT_TYPES = frozenset({"edit", "generate", "complexedit"})  # HQ-Edit subfolders and the Complex-Edit set
IMAGE_TOKEN = re.compile(r"\s*<image>\s*")


@register_preset("gpt_image_edit")
class GPTImageEdit(TablePreset):
    hub_id = ""  # tars + separate annotation files: not loadable with datasets, use a local copy
    dataset = "UCSC-VLAA/GPT-Image-Edit-1.5M"
    required = ()

    def open(self):
        path = Path(self.path)
        if not self.path or not path.exists():
            raise ValueError("ingest.preset.path: gpt_image_edit needs a local folder with the unpacked gpt-edit/ "
                             f"images and the training_json/ annotations (got {self.path!r})")
        self.sources = annotation_sources(path)
        if self.params.split is not None:
            choices = sorted(a.stem for a, _ in self.sources)
            self.sources = [(a, r) for a, r in self.sources if a.stem == self.params.split]
            if not self.sources:
                raise ValueError(f"ingest.preset.split: annotation file {self.params.split!r} not in {path}; "
                                 f"choose one of: {', '.join(choices)}")
        return tables.Table(root=path if path.is_dir() else path.parent)

    def pairs(self) -> Iterator[RawPair]:
        for annotation_file, root in self.sources:
            for index, record in enumerate(tables.iter_file(annotation_file)):
                yield self.record(record if isinstance(record, dict) else {}, annotation_file.stem, root, index)

    def record(self, record: dict[str, Any], stem: str, root: Path, index: int) -> RawPair:
        errors: list[str] = []
        source, edited, instruction = _fields(record)
        variants = text_list([instruction, record.get("instruction_original")])
        ident = record.get("id", record.get("__key__"))
        meta = {"row": index, "annotations": stem,
                **{k: record[k] for k in ("dataset_source", "task", "instruction_type", "input_description")
                   if k in record}}
        pair = RawPair(self.origin, f"{stem}/{ident if ident is not None else f'row {index}'}", instruction,
                       None, None, instruction_variants=variants, meta=meta)
        if not source or not edited:
            errors.append(f"malformed annotation: missing {'input' if not source else 'output'} path")
        else:
            pair.source = self.read_path(source, "source", errors, [root])
            pair.edited = self.read_path(edited, "edited", errors, [root])
        map_edit_type(record.get("task"), TASKS, pair, NOT_TYPES)
        pair.error = errors[0] if errors else None
        return pair


def _fields(record: dict[str, Any]) -> tuple[Any, Any, Any]:
    """(input path, output path, instruction) from a flat or a llava-style record."""
    source, edited, instruction = record.get("input"), record.get("output"), record.get("instruction")
    images = record.get("image") or record.get("images")
    if (not source or not edited) and isinstance(images, list) and len(images) >= 2:
        source, edited = images[0], images[-1]
    if instruction is None and isinstance(record.get("conversations"), list):
        for turn in record["conversations"]:
            if isinstance(turn, dict) and turn.get("from") in ("human", "user") and isinstance(turn.get("value"), str):
                instruction = IMAGE_TOKEN.sub(" ", turn["value"]).strip()
                break
    return (source if isinstance(source, str) else None, edited if isinstance(edited, str) else None, instruction)


def annotation_sources(path: Path) -> list[tuple[Path, Path]]:
    """(annotation json, image root) pairs: from ``data.txt``, else by the published names, else beside the json."""
    if path.is_file():
        return [(path, _default_root(path, path.parent.parent if path.parent.name == "training_json" else path.parent))]
    listing = path / "data.txt"
    if listing.is_file():
        sources = []
        for number, line in enumerate(listing.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            parts = [p.strip() for p in line.split(",")]
            if len(parts) < 2:
                raise ValueError(f"{listing}:{number}: expected '<image root>,<annotation json>[,<flag>]'")
            sources.append((_inside(path, parts[1], listing), _inside(path, parts[0], listing)))
        return sources
    found = sorted(p for folder in (path / "training_json", path) if folder.is_dir() for p in folder.glob("*.json"))
    if not found:
        raise ValueError(f"ingest.preset.path: no annotation json (training_json/*.json or data.txt) under {path}")
    return [(annotations, _default_root(annotations, path)) for annotations in found]


def _default_root(annotations: Path, base: Path) -> Path:
    folder = ROOTS.get(annotations.name)
    if folder:
        for candidate in (base / "gpt-edit" / folder, base / "data" / "gpt-edit" / folder, base / folder):
            if candidate.is_dir():
                return candidate
    return annotations.parent


def _inside(base: Path, relative: str, listing: Path) -> Path:
    resolved = (base / relative).resolve()
    if not resolved.is_relative_to(base.resolve()):
        raise ValueError(f"{listing}: {relative!r} is outside the dataset folder {base}")
    return resolved
