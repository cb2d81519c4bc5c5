"""Read ImgEdit-Bench (PKU-YuanGroup/ImgEdit, ``Benchmark/``) from a local copy.

Two layouts are found from ``path`` (the json file itself, or a folder above it):

* the repository: ``Benchmark/Basic/basic_edit.json`` = ``{key: {"id": "<category>/<file>.jpg", "prompt", "edit_type"}}``
  (737 items) and the judge rubrics ``Benchmark/Basic/prompts.json`` = ``{edit_type: "<rubric with <edit_prompt>>"}``,
  with the images under ``Benchmark/singleturn/`` (or given as ``image_root``);
* the unpacked ``Benchmark.tar``: ``singleturn/singleturn.json`` beside the ``<category>/`` image folders. The tar has
  no ``prompts.json``: it is looked for in the usual places above and beside the json, or given as ``prompts``
  (``bench.imgedit_prompts``).

The UGE suite (``suite="uge"``, ``Benchmark/UGE/UGE_edit.json`` = ``{key: {"id": "<file>.jpg", "prompt"}}``) has no edit
types: its items get ``edit_type`` None and the flag ``edit_type_missing`` (category ``uge``), as does any entry without
one; an entry with an edit type we do not know is rejected. The current json spells the attribute category ``adjust``,
older copies ``alter``; both map to our ``adjust``. Image ids resolve inside the image root (no ``..``, no links out;
``allow_outside`` lifts that check, never the regular-file and size checks).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

from benchmarks.items import BenchItem
from editkit import safe_paths, taxonomy

EDIT_JSON = "basic_edit.json"
SINGLETURN_JSON = "singleturn.json"
UGE_JSON = "UGE_edit.json"
PROMPTS_JSON = "prompts.json"
SUITES = ("basic", "uge")
CATEGORY_ALIASES = {"alter": "adjust"}
MISSING_TYPE_FLAG = "edit_type_missing"


def _candidates(path: Path, suite: str) -> list[Path]:
    if suite == "uge":
        return [path / UGE_JSON, path / "UGE" / UGE_JSON, path / "Benchmark" / "UGE" / UGE_JSON]
    return [path / EDIT_JSON, path / "Basic" / EDIT_JSON, path / "Benchmark" / "Basic" / EDIT_JSON,
            path / SINGLETURN_JSON, path / "singleturn" / SINGLETURN_JSON,
            path / "Benchmark" / "singleturn" / SINGLETURN_JSON]


def find_edit_json(path: Path | str, suite: str = "basic") -> Path:
    if suite not in SUITES:
        raise ValueError(f"bench.imgedit_suite: unknown suite {suite!r}; choose one of: {', '.join(SUITES)}")
    path = Path(path)
    if path.is_file():
        return path
    for candidate in _candidates(path, suite):
        if candidate.is_file():
            return candidate
    expected = (UGE_JSON + " (in UGE/)") if suite == "uge" else (
        f"{EDIT_JSON} (in Benchmark/Basic/) or {SINGLETURN_JSON} (in singleturn/, the unpacked Benchmark.tar)")
    raise FileNotFoundError(f"ImgEdit-Bench not found at {path}: expected {expected}")


def find_image_root(edit_json: Path, image_root: Path | str | None = None) -> Path:
    if image_root is not None:
        return Path(image_root)
    folder = edit_json.parent
    if edit_json.name in (SINGLETURN_JSON, UGE_JSON):  # the unpacked tar / UGE: images beside the json
        return folder
    for candidate in (folder.parent / "singleturn", folder / "singleturn", folder.parent.parent / "singleturn",
                      folder / "images"):
        if candidate.is_dir():
            return candidate
    return folder  # ids relative to the json's folder (UGE, flat copies)


def find_prompts(path: Path | str, prompts: Path | str | None = None) -> dict[str, str] | None:
    """The judge rubrics (``prompts.json``): ``prompts`` when given (must exist), else found near the benchmark json
    (None when the copy has none, e.g. an unpacked ``Benchmark.tar`` alone)."""
    if prompts is not None:
        candidate = Path(prompts)
        if not candidate.is_file():
            raise FileNotFoundError(f"bench.imgedit_prompts: {candidate} does not exist (ImgEdit's "
                                    f"Benchmark/Basic/{PROMPTS_JSON})")
    else:
        edit_json, root = find_edit_json(path), Path(path)
        places = [edit_json.parent, root, root / "Basic", root / "Benchmark" / "Basic", edit_json.parent.parent / "Basic",
                  edit_json.parent.parent / "Benchmark" / "Basic"]
        candidate = next((p / PROMPTS_JSON for p in places if (p / PROMPTS_JSON).is_file()), None)
        if candidate is None:
            return None
    loaded = json.loads(candidate.read_text(encoding="utf-8"))
    if not isinstance(loaded, dict) or not all(isinstance(v, str) for v in loaded.values()):
        raise ValueError(f"{candidate}: expected {{edit_type: prompt text}}")
    return loaded


def _load(edit_json: Path) -> dict:
    try:
        entries = json.loads(edit_json.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{edit_json} is not valid JSON: {exc}") from None
    if not isinstance(entries, dict):
        raise ValueError(f"{edit_json}: expected an object {{key: {{id, prompt, edit_type}}}}")
    return entries


def _known_types(edit_json: Path, path: Path) -> dict[str, str]:
    """Edit types by key from a ``basic_edit.json`` near a ``singleturn.json`` that lacks them."""
    if edit_json.name != SINGLETURN_JSON:
        return {}
    for place in (path, edit_json.parent.parent, edit_json.parent.parent.parent):
        for candidate in _candidates(place, "basic")[:3]:
            if candidate.is_file():
                return {k: v["edit_type"] for k, v in _load(candidate).items()
                        if isinstance(v, dict) and isinstance(v.get("edit_type"), str)}
    return {}


def read_imgedit(path: Path | str, image_root: Path | str | None = None, suite: str = "basic",
                 allow_outside: bool = False) -> Iterator[BenchItem]:
    edit_json = find_edit_json(path, suite)
    root = find_image_root(edit_json, image_root)
    entries = _load(edit_json)
    known = _known_types(edit_json, Path(path)) if suite == "basic" else {}
    for key, entry in entries.items():
        error, flags = None, []
        if not isinstance(entry, dict) or not {"id", "prompt"} <= set(entry):
            entry = entry if isinstance(entry, dict) else {}
            error = f"malformed entry (needs id, prompt): {sorted(entry)}"
        category = entry.get("edit_type") or known.get(str(key))
        if error is None and not category:
            flags.append(MISSING_TYPE_FLAG)
        data = None
        if error is None:
            try:
                data = safe_paths.read_inside(root, str(entry["id"]), allow_outside=allow_outside)
            except FileNotFoundError:
                error = f"missing source image {root / str(entry['id'])}"
            except safe_paths.UnsafePath as unsafe:
                error = f"unsafe image path: {unsafe}"
        yield BenchItem(
            origin="imgedit",
            key=str(key),
            instruction=str(entry.get("prompt", "")),
            category=str(category or ("uge" if suite == "uge" else "")),
            image_bytes=data,
            extra={"image_id": entry.get("id"), "edit_type": category, "suite": suite},
            error=error,
            flags=flags,
        )


def edit_type(category: str) -> str | None:
    return taxonomy.IMGEDIT_TO_EDIT_TYPE.get(CATEGORY_ALIASES.get(category, category))


def read(path: Path | str, params: Any) -> Iterator[tuple[BenchItem, str | None]]:
    """The ``imgedit`` entry of :data:`benchmarks.build.READERS`: items with their edit type."""
    for item in read_imgedit(path, params.imgedit_image_root, params.imgedit_suite,
                             getattr(params, "allow_outside_root", False)):
        yield item, edit_type(item.category)
