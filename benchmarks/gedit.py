"""Read GEdit-Bench (Step1X-Edit; Hugging Face dataset ``stepfun-ai/GEdit-Bench``) from a local copy.

The release is one ``train`` split (1,212 rows: 606 instructions x ``en``/``cn``) with the fields ``task_type, key,
instruction, instruction_language, input_image, input_image_raw, Intersection_exist``; the two images are ``datasets``
``Image`` features. Nothing is downloaded here: ``path`` is either

* a directory written by ``Dataset.save_to_disk`` / ``DatasetDict.save_to_disk``, or
* a local clone of the hub repository (its ``data/train-*.parquet`` files), a folder of such parquet files or of
  ``*.arrow`` files (the ``datasets`` cache format), or one parquet / arrow file.

The source image of an item is ``input_image``, the image GEdit's own scorer compares the edit against (it saves it
as ``{key}_SRCIMG.png``); ``source_image="input_image_raw"`` reads the unresized original instead (either falls back
to the other when its cell is empty). The evaluation resizes each edited image back to the source size, as GEdit's
scorer does. Languages are ``en`` and ``cn`` (``both`` / ``all``: the two). An image cell holding only a ``path``
is read only when that path stays inside the dataset folder (:mod:`editkit.safe_paths`; ``allow_outside`` lifts that
check); otherwise the item is rejected with the reason.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

from benchmarks.items import BenchItem
from editkit import taxonomy
from editkit.safe_paths import UnsafePath, read_inside

FIELDS = ("task_type", "key", "instruction", "instruction_language", "input_image", "input_image_raw",
          "Intersection_exist")
IMAGE_FIELDS = ("input_image", "input_image_raw")
LANGUAGES = ("en", "cn")
ALL_LANGUAGES = ("both", "all")


def check_languages(values, key: str = "bench.gedit_languages") -> tuple[str, ...]:
    """The configured languages, checked: ``en`` / ``cn``, or ``both`` / ``all`` for the two."""
    values = [values] if isinstance(values, str) else list(values or [])
    chosen: list[str] = []
    for value in values:
        name = str(value).strip().lower()
        if name in ALL_LANGUAGES:
            chosen += [lang for lang in LANGUAGES if lang not in chosen]
        elif name in LANGUAGES:
            chosen += [] if name in chosen else [name]
        else:
            hint = " (GEdit-Bench's data spells Chinese cn)" if name == "zh" else ""
            raise ValueError(f"{key}: unknown language {value!r}{hint}; choose from: "
                             f"{', '.join(LANGUAGES + ALL_LANGUAGES)}")
    if not chosen:
        raise ValueError(f"{key} is empty; choose from: {', '.join(LANGUAGES + ALL_LANGUAGES)}")
    return tuple(chosen)


def load_rows(path: Path | str):
    """The GEdit table as a ``datasets.Dataset`` with images left encoded (decoded later, per item, with checks)."""
    import datasets

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"GEdit-Bench not found at {path}: download stepfun-ai/GEdit-Bench elsewhere and "
                                "pass its local folder (save_to_disk output or the repository's parquet files)")
    if path.is_dir() and ((path / "dataset_dict.json").exists() or (path / "state.json").exists()):
        table = datasets.load_from_disk(str(path))
    else:
        files = [path] if path.is_file() else sorted(path.rglob("*.parquet")) or sorted(path.rglob("*.arrow"))
        if not files:
            raise FileNotFoundError(f"no GEdit-Bench data in {path}: expected a save_to_disk folder, *.parquet or "
                                    "*.arrow files")
        if files[0].suffix == ".arrow":  # memory-mapped as they are, no conversion
            table = datasets.concatenate_datasets([datasets.Dataset.from_file(str(f)) for f in files])
        else:
            table = datasets.load_dataset("parquet", data_files=[str(f) for f in files], split="train")
    if isinstance(table, datasets.DatasetDict):
        split = "train" if "train" in table else next(iter(table))
        table = table[split]
    missing = [f for f in ("task_type", "key", "instruction", "instruction_language") if f not in table.column_names]
    if missing or not any(f in table.column_names for f in IMAGE_FIELDS):
        raise ValueError(f"{path} is not GEdit-Bench: missing column(s) {missing or list(IMAGE_FIELDS)}; "
                         f"expected {list(FIELDS)}, found {table.column_names}")
    for name in IMAGE_FIELDS:
        if name in table.column_names:
            table = table.cast_column(name, datasets.Image(decode=False))
    return table


def read_gedit(path: Path | str, languages: tuple[str, ...] | list[str] = ("en",),
               source_image: str = "input_image", allow_outside: bool = False) -> Iterator[BenchItem]:
    """Yield the items whose ``instruction_language`` is in ``languages`` (``()`` = all; see :func:`check_languages`)."""
    if source_image not in IMAGE_FIELDS:
        raise ValueError(f"bench.gedit_source_image: {source_image!r}; choose one of: {', '.join(IMAGE_FIELDS)}")
    wanted = check_languages(languages) if languages else ()
    root = Path(path) if Path(path).is_dir() else Path(path).parent
    for row in load_rows(path):
        if wanted and row["instruction_language"] not in wanted:
            continue
        yield _item(row, source_image, root, allow_outside)


def _item(row: dict[str, Any], source_image: str = "input_image", root: Path | None = None,
          allow_outside: bool = False) -> BenchItem:
    other = IMAGE_FIELDS[1 - IMAGE_FIELDS.index(source_image)]
    try:
        data, problem = (_image_bytes(row.get(source_image), root, allow_outside)
                         or _image_bytes(row.get(other), root, allow_outside)), None
    except (UnsafePath, OSError) as error:
        data, problem = None, f"unsafe source image path: {error}"
    category = row["task_type"]
    return BenchItem(
        origin="gedit",
        key=str(row["key"]),
        instruction=str(row["instruction"]),
        category=category,
        image_bytes=data,
        extra={
            "instruction_language": row["instruction_language"],
            "intersection_exist": bool(row.get("Intersection_exist", False)),
            "task_type": category,
        },
        error=problem or (None if data else "missing source image (input_image and input_image_raw are empty)"),
    )


def _image_bytes(image: Any, root: Path | None, allow_outside: bool = False) -> bytes | None:
    if not image:
        return None
    if image.get("bytes"):
        return image["bytes"]
    if image.get("path"):
        if root is None:
            raise UnsafePath(image["path"], "no dataset folder to read it from")
        try:
            return read_inside(root, image["path"], allow_outside=allow_outside)
        except FileNotFoundError:
            return None
    return None


def edit_type(category: str) -> str | None:
    return taxonomy.GEDIT_TO_EDIT_TYPE.get(category)


def read(path: Path | str, params: Any) -> Iterator[tuple[BenchItem, str | None]]:
    """The ``gedit`` entry of :data:`benchmarks.build.READERS`: items with their edit type."""
    for item in read_gedit(path, check_languages(params.gedit_languages), params.gedit_source_image,
                           getattr(params, "allow_outside_root", False)):
        yield item, edit_type(item.category)
