"""Bad-input variants of the fixture benchmarks (the clean ones come from benchmarks.synthetic, shared with
`editkit bench make-fixture`): corrupt images, unknown categories, missing files, malformed entries."""
from __future__ import annotations

import json
import shutil
from pathlib import Path


def break_gedit(root: Path) -> Path:
    """Append rows to a GEdit fixture: a corrupt image, an unknown task_type, and an empty image."""
    import datasets

    files = sorted((root / "data").glob("*.parquet"))
    table = datasets.load_dataset("parquet", data_files=[str(f) for f in files], split="train")
    table = table.cast_column("input_image", datasets.Image(decode=False))
    table = table.cast_column("input_image_raw", datasets.Image(decode=False))
    good = table[0]
    extra = []
    for key, task, image in [("corrupt", "subject-remove", {"bytes": b"\x89PNG not really", "path": None}),
                             ("unknown", "teleport", good["input_image_raw"]),
                             ("empty", "color_alter", None)]:
        row = dict(good, key=key, task_type=task, input_image_raw=image, input_image=image)
        extra.append(row)
    merged = datasets.concatenate_datasets([table, datasets.Dataset.from_list(extra, features=table.features)])
    out = root.parent / f"{root.name}_broken"
    merged.to_parquet(str(out / "data" / "train-00000-of-00001.parquet"))
    return out


def break_imgedit(root: Path) -> Path:
    """A copy of an ImgEdit fixture with a missing image, a malformed entry and an unknown edit type added."""
    out = root.parent / f"{root.name}_broken"
    shutil.copytree(root, out, dirs_exist_ok=True)
    path = out / "Benchmark" / "Basic" / "basic_edit.json"
    entries = json.loads(path.read_text())
    first = next(iter(entries.values()))
    entries["900"] = {"id": "animal/does_not_exist.jpg", "prompt": "Remove the cat.", "edit_type": "remove"}
    entries["901"] = {"prompt": "no id here"}
    entries["902"] = dict(first, edit_type="teleport")
    path.write_text(json.dumps(entries, indent=4))
    return out


def as_benchmark_tar(root: Path) -> Path:
    """The ImgEdit fixture as the unpacked ``Benchmark.tar``: ``singleturn/singleturn.json`` beside the category
    folders, no ``prompts.json`` (the tar does not ship it)."""
    out = root.parent / f"{root.name}_tar"
    shutil.copytree(root / "Benchmark" / "singleturn", out / "singleturn", dirs_exist_ok=True)
    entries = json.loads((root / "Benchmark" / "Basic" / "basic_edit.json").read_text())
    (out / "singleturn" / "singleturn.json").write_text(json.dumps(entries, indent=4))
    return out


def add_uge(root: Path) -> Path:
    """``Benchmark/UGE/UGE_edit.json`` (``{key: {id, prompt}}``, no edit type) with its images beside it."""
    uge = root / "Benchmark" / "UGE"
    uge.mkdir(parents=True, exist_ok=True)
    images = sorted((root / "Benchmark" / "singleturn").rglob("*.jpg"))[:2]
    entries = {}
    for index, image in enumerate(images):
        name = f"{29784 + index:09d}.jpg"
        shutil.copy(image, uge / name)
        entries[str(index)] = {"id": name, "prompt": f"Make the picture look like a postcard {index}."}
    (uge / "UGE_edit.json").write_text(json.dumps(entries, indent=4))
    return root


def as_arrow_folder(root: Path) -> Path:
    """The GEdit fixture as a folder holding only ``*.arrow`` files (how a ``datasets`` cache stores it)."""
    import datasets

    files = sorted((root / "data").glob("*.parquet"))
    table = datasets.load_dataset("parquet", data_files=[str(f) for f in files], split="train")
    out = root.parent / f"{root.name}_arrow"
    out.mkdir(parents=True, exist_ok=True)
    for path in table.cache_files:
        shutil.copy(path["filename"], out / f"gedit-bench-train-{len(list(out.glob('*.arrow'))):05d}.arrow")
    return out
