"""Read ImgEdit-Bench (PKU-YuanGroup/ImgEdit, ``Benchmark/Basic``) from a local copy.

The release is ``basic_edit.json`` = ``{key: {"id": "<category>/<file>.jpg", "prompt": ..., "edit_type": ...}}``
(737 items), the per-type judge prompts ``prompts.json`` = ``{edit_type: "<rubric with <edit_prompt> placeholder>"}``,
and the original images under a root folder (``Benchmark/singleturn/`` in the released ``Benchmark.tar``) at the
relative path given by ``id``. ``path`` may be the json file, the folder holding it, or the unpacked release root;
the image root is found next to it unless given.

Each ``id`` is a path from the data: it is read only when it stays inside the image root (:mod:`editkit.safe_paths`;
``allow_outside`` lifts that check), else the item is rejected with the reason.

The published json spells the attribute category ``alter`` while the repository's README says ``adjust``; both map
to our ``adjust``.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

from benchmarks.items import BenchItem
from editkit import taxonomy
from editkit.safe_paths import UnsafePath, read_inside

EDIT_JSON = "basic_edit.json"
PROMPTS_JSON = "prompts.json"
CATEGORY_ALIASES = {"alter": "adjust"}


def find_edit_json(path: Path | str) -> Path:
    path = Path(path)
    if path.is_file():
        return path
    for candidate in (path / EDIT_JSON, path / "Basic" / EDIT_JSON, path / "Benchmark" / "Basic" / EDIT_JSON):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"ImgEdit-Bench not found at {path}: expected {EDIT_JSON} there or in Benchmark/Basic/")


def find_image_root(edit_json: Path, image_root: Path | str | None = None) -> Path:
    if image_root is not None:
        return Path(image_root)
    basic = edit_json.parent
    for candidate in (basic.parent / "singleturn", basic / "singleturn", basic.parent.parent / "singleturn",
                      basic / "images"):
        if candidate.is_dir():
            return candidate
    return basic  # ids relative to the json's folder


def find_prompts(path: Path | str) -> dict[str, str] | None:
    """The judge rubric prompts shipped beside ``basic_edit.json`` (None when the copy has none)."""
    candidate = find_edit_json(path).parent / PROMPTS_JSON
    if not candidate.is_file():
        return None
    prompts = json.loads(candidate.read_text(encoding="utf-8"))
    if not isinstance(prompts, dict) or not all(isinstance(v, str) for v in prompts.values()):
        raise ValueError(f"{candidate}: expected {{edit_type: prompt text}}")
    return prompts


def read_imgedit(path: Path | str, image_root: Path | str | None = None,
                 allow_outside: bool = False) -> Iterator[BenchItem]:
    edit_json = find_edit_json(path)
    root = find_image_root(edit_json, image_root)
    try:
        entries = json.loads(edit_json.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{edit_json} is not valid JSON: {exc}") from None
    if not isinstance(entries, dict):
        raise ValueError(f"{edit_json}: expected an object {{key: {{id, prompt, edit_type}}}}")
    for key, entry in entries.items():
        error = None
        if not isinstance(entry, dict) or not {"id", "prompt", "edit_type"} <= set(entry):
            entry = entry if isinstance(entry, dict) else {}
            error = f"malformed entry (needs id, prompt, edit_type): {sorted(entry)}"
        data = None
        if error is None:
            image_path = root / str(entry["id"])
            try:
                data = read_inside(root, str(entry["id"]), allow_outside=allow_outside)
            except FileNotFoundError:
                error = f"missing source image {image_path}"
            except UnsafePath as refused:
                error = f"unsafe source image path: {refused}"
            except OSError as failure:
                error = f"missing source image {image_path}: {failure.strerror or failure}"
        yield BenchItem(
            origin="imgedit",
            key=str(key),
            instruction=str(entry.get("prompt", "")),
            category=str(entry.get("edit_type", "")),
            image_bytes=data,
            extra={"image_id": entry.get("id"), "edit_type": entry.get("edit_type")},
            error=error,
        )


def edit_type(category: str) -> str | None:
    return taxonomy.IMGEDIT_TO_EDIT_TYPE.get(CATEGORY_ALIASES.get(category, category))
