"""CoCoEdit's masked GEdit-Bench / ImgEdit-Bench release (``wyh6666/GEditBench_ImgEditBench_with_mask``).

Layout (its README, "Structure of the Benchmarks")::

    geditbench/metafile_geditbench.json      geditbench/fullset/<task_type>/<lang>/<key>.png + <key>_mask.png
    imgedit/metafile_imgeditbench.json       imgedit/singleturn/<category>/<id>.png + <id>_mask.png

The metafiles' schema is not documented; CoCoEdit's own scripts read a JSON object ``{key: entry}`` whose entries
name the image (``ref_image_path``, GEdit; ``id``, ImgEdit) and the instruction (``caption`` / ``prompt``). This
reader accepts an object or a list of entries and these field names (plus ``image``/``image_path``,
``instruction``, ``key``, ``task_type``/``edit_type``). An image path containing ``gedit-bench/`` is taken relative
to what follows (CoCoEdit's scripts do so); otherwise relative to the benchmark folder, then to ``singleturn/``;
the file is found under its own extension or ``.png``/``.jpg``. ImgEdit's categories (folders) are not edit types:
an entry without ``edit_type`` takes it from ``basic_edit.json`` of the public ImgEdit release when one is given.

Masks: ``<stem>_mask.png`` beside the image, **white = keep** (CoCoEdit's convention, inferred for this release
from its training code); inverted to ours (True = should change: max over channels below 128) and used as ``gt``.
"""
from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from benchmarks import gedit, imgedit
from benchmarks.items import BenchItem
from editkit.safe_paths import UnsafePath, resolve_inside

FOLDERS = {"gedit": ("geditbench", "metafile_geditbench.json"), "imgedit": ("imgedit", "metafile_imgeditbench.json")}
IMAGE_FIELDS = ("ref_image_path", "id", "image", "image_path", "input_image")
TEXT_FIELDS = ("caption", "prompt", "instruction")
MAX_BYTES = 64 * 1024 * 1024


def bench_root(bench: str, path: Path | str) -> tuple[Path, Path]:
    """(benchmark folder, metafile) from the release root or the benchmark's own folder."""
    folder, metafile = FOLDERS[bench]
    for root in (Path(path) / folder, Path(path)):
        if (root / metafile).is_file():
            return root, root / metafile
    raise FileNotFoundError(f"no {metafile} under {path} or {Path(path) / folder}: point the path at the unpacked "
                            "GEditBench_ImgEditBench_with_mask release")


def read_masked(bench: str, path: Path | str, imgedit_types: Path | str | None = None) -> Iterator[BenchItem]:
    root, metafile = bench_root(bench, path)
    data = json.loads(metafile.read_text(encoding="utf-8"))
    entries = list(data.items()) if isinstance(data, dict) else [(None, e) for e in data] if isinstance(data, list) \
        else None
    if entries is None:
        raise ValueError(f"{metafile}: expected a JSON object or list of entries")
    types = _imgedit_types(imgedit_types) if bench == "imgedit" else {}
    for index, (key, entry) in enumerate(entries):
        yield _item(bench, root, key, entry, index, types)


def _imgedit_types(path: Path | str | None) -> dict[str, str]:
    if path is None or not Path(path).exists():
        return {}
    try:
        data = json.loads(imgedit.find_edit_json(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    return {str(k): str(v.get("edit_type")) for k, v in data.items() if isinstance(v, dict) and v.get("edit_type")}


def _item(bench: str, root: Path, key: Any, entry: Any, index: int, types: dict[str, str]) -> BenchItem:
    item = BenchItem(origin=bench, key=str(key if key is not None else index), instruction="", category="",
                     image_bytes=None)
    if not isinstance(entry, dict):
        item.error = "malformed metafile entry: not an object"
        return item
    item.key = str(entry.get("key") or item.key)
    item.instruction = next((str(entry[f]) for f in TEXT_FIELDS if isinstance(entry.get(f), str)), "")
    relative = next((entry[f] for f in IMAGE_FIELDS if isinstance(entry.get(f), str) and entry[f]), None)
    if relative is None or not item.instruction:
        item.error = f"malformed metafile entry: needs an image path and an instruction, has {sorted(entry)}"
        return item
    relative = relative.split("gedit-bench/", 1)[1] if "gedit-bench/" in relative else relative
    parts = Path(relative).parts
    if bench == "gedit":
        task = entry.get("task_type") or (parts[-3] if len(parts) >= 3 else "")
        language = entry.get("instruction_language") or (parts[-2] if len(parts) >= 3 else "en")
        item.category = str(task)
        item.extra = {"task_type": item.category, "instruction_language": str(language),
                      "intersection_exist": entry.get("Intersection_exist"), "image_path": relative}
    else:
        item.category = str(entry.get("edit_type") or types.get(item.key, ""))
        item.extra = {"image_id": relative, "edit_type": item.category or None, "folder": parts[0] if parts else ""}
    try:
        image = _find(root, relative)
        item.image_bytes = image.read_bytes()
        mask_path = image.with_name(f"{image.stem}_mask.png")
        item.mask = keep_to_edit(resolve_inside(root, mask_path.relative_to(root), max_bytes=MAX_BYTES).read_bytes())
    except (UnsafePath, FileNotFoundError) as error:
        item.error = f"missing file: {error}"
    except (OSError, ValueError) as error:
        item.error = f"unreadable mask: {type(error).__name__}: {error}"
    if item.error is None and not item.category:
        item.error = "no edit_type for this item (give bench.imgedit_path, the public ImgEdit release with " \
                     "basic_edit.json)"
    return item


def _find(root: Path, relative: str) -> Path:
    stem = Path(relative).with_suffix("")
    for base in ("", "singleturn", "fullset"):
        for candidate in (Path(relative), stem.with_suffix(".png"), stem.with_suffix(".jpg")):
            try:
                return resolve_inside(root, Path(base) / candidate, max_bytes=MAX_BYTES)
            except FileNotFoundError:
                continue
    raise FileNotFoundError(f"image {relative} not found under {root}")


def keep_to_edit(data: bytes) -> np.ndarray:
    """A released mask (white = keep) -> bool, True = should change."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            return np.asarray(image.convert("RGB")).max(axis=2) < 128
    except UnidentifiedImageError as error:
        raise ValueError(str(error)) from error


def edit_type(bench: str, category: str) -> str | None:
    return gedit.edit_type(category) if bench == "gedit" else imgedit.edit_type(category)


def read(bench: str, path: Path | str, params: Any) -> Iterator[tuple[BenchItem, str | None]]:
    """``bench.layout: cocoedit``: items with their edit type (ImgEdit's from ``bench.imgedit_path``)."""
    if bench not in FOLDERS:
        raise ValueError(f"bench.layout cocoedit holds gedit and imgedit, not {bench!r}")
    for item in read_masked(bench, path, params.imgedit_path):
        yield item, edit_type(bench, item.category)
