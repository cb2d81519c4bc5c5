"""Rows of a dataset as plain dicts, read lazily from wherever the dataset lives.

* a local file: ``.parquet`` (row groups in batches), ``.jsonl`` (line by line), ``.arrow`` (Arrow IPC stream, the
  ``datasets`` cache format), ``.json`` (one JSON list, read whole);
* a local folder: a ``save_to_disk`` copy, or a folder of data files (a clone of a hub repository) whose files and
  splits are resolved the way ``datasets`` resolves them (:func:`hub_splits`): the ``configs: data_files`` of its
  ``README.md`` when it has one, else ``datasets``' own data-file patterns (the split from the file-name prefix,
  sharded names with hashes such as ``data/train-00000-of-00002-<hash>.parquet``, ``train/...`` folders);
* a hub id: ``datasets.load_dataset`` (``streaming=True``: an ``IterableDataset``, nothing downloaded up front).

Local files are always read lazily (pyarrow batches / lines), so memory stays bounded and nothing is copied into an
Arrow cache. Image cells come back encoded (``{"bytes", "path"}``), never decoded.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

DATA_SUFFIXES = (".parquet", ".jsonl", ".arrow", ".json", ".jsonl.gz")
BATCH_ROWS = 64
_DISK_MARKERS = ("dataset_dict.json", "state.json", "dataset_info.json")


@dataclass
class Table:
    """Where the rows of one split come from; iterate for rows, ``len()`` when it is known without reading."""

    root: Path | None  # folder that relative path cells resolve against (None for a hub dataset)
    files: list[Path] = field(default_factory=list)
    dataset: Any = None  # a datasets.Dataset / IterableDataset (hub or save_to_disk)
    columns: list[str] = field(default_factory=list)
    length: Optional[int] = None
    split: Optional[str] = None  # the split these rows are (None: the files named none)
    read_columns: Optional[list[str]] = None  # parquet: read only these columns (None: all)

    def __len__(self) -> int:
        if self.length is None:
            raise TypeError("length unknown (streaming)")
        return self.length

    def __iter__(self) -> Iterator[dict[str, Any]]:
        if self.dataset is not None:
            yield from self.dataset
            return
        for path in self.files:
            yield from iter_file(path, self.read_columns)


def open_table(path: str, split: Optional[str], default_split: Optional[str], streaming: bool,
               key: str = "ingest.preset") -> Table:
    """The rows of ``split`` (``None``: ``default_split``, or everything when the files carry no split names)."""
    local = Path(path).expanduser()
    if local.is_file():
        return _files_table(local.parent, [local])
    if local.is_dir():
        if any((local / marker).exists() for marker in _DISK_MARKERS):
            return _disk_table(local, split, default_split, key)
        chosen, files = select_split(hub_splits(local, key), local, split, default_split, key)
        table = _files_table(local, files)
        table.split = chosen
        return table
    if path.startswith((".", "/", "~")) or path.count("/") != 1:
        raise ValueError(f"{key}.path: {path!r} is neither a local file/folder nor a hub id (org/name)")
    return _hub_table(path, split or default_split, streaming, key)


def is_data_file(path: Path | str) -> bool:
    name = str(path)
    return name.endswith(DATA_SUFFIXES) and not Path(name).name.startswith(".")


def data_files(root: Path, suffixes: Sequence[str] = DATA_SUFFIXES) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.name.endswith(tuple(suffixes)) and p.is_file()
                  and not p.name.startswith("."))


def card_patterns(root: Path) -> Optional[dict[str, list[str]]]:
    """The split -> file patterns of the default config in ``root/README.md`` (its ``configs:`` YAML), if any."""
    readme = root / "README.md"
    if not readme.is_file():
        return None
    from datasets.data_files import sanitize_patterns
    from datasets.utils.metadata import MetadataConfigs
    from huggingface_hub import DatasetCard

    try:
        configs = MetadataConfigs.from_dataset_card_data(DatasetCard.load(readme).data)
    except Exception:  # a card without (valid) YAML front matter: fall back to the file-name patterns
        return None
    if not configs:
        return None
    name = configs.get_default_config_name() or next(iter(configs))
    data_files = configs[name].get("data_files")
    return sanitize_patterns(data_files) if data_files else None


def hub_splits(root: Path, key: str = "ingest.preset") -> dict[str, list[Path]]:
    """Split -> data files of a local folder, resolved by ``datasets``' data-files machinery (the card's
    ``configs: data_files``, else ``get_data_patterns``), so a clone of a hub repository splits as the hub shows it."""
    from datasets.data_files import DataFilesDict, EmptyDatasetError, get_data_patterns

    try:
        patterns = card_patterns(root) or get_data_patterns(str(root))
        resolved = DataFilesDict.from_patterns(patterns, base_path=str(root))
    except (EmptyDatasetError, FileNotFoundError):
        resolved = {}
    splits = {str(name): sorted(Path(str(f)) for f in files if is_data_file(f)) for name, files in resolved.items()}
    splits = {name: files for name, files in splits.items() if files}
    if not splits:
        raise ValueError(f"{key}.path: no data files ({', '.join(DATA_SUFFIXES)}) under {root}")
    return splits


def select_split(splits: dict[str, list[Path]], root: Path, split: Optional[str], default_split: Optional[str],
                 key: str) -> tuple[Optional[str], list[Path]]:
    """The split asked for (else the default one, else the only one) and its files."""
    wanted = split or default_split
    if wanted in splits:
        return wanted, splits[wanted]
    if split is None and len(splits) == 1:
        return next(iter(splits.items()))  # a single split and none was asked for: take it
    if split is None and wanted is None:
        return None, sorted(f for files in splits.values() for f in files)
    raise ValueError(f"{key}.split: {wanted!r} not found in {root}; choose one of: {', '.join(sorted(splits))}")


def iter_file(path: Path, columns: Optional[list[str]] = None) -> Iterator[dict[str, Any]]:
    """The rows of one data file, lazily (``columns``: a parquet file reads only those)."""
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        parquet = pq.ParquetFile(path)
        names = set(parquet.schema_arrow.names)
        wanted = [c for c in columns if c in names] if columns else None
        for batch in parquet.iter_batches(batch_size=BATCH_ROWS, columns=wanted):
            yield from batch.to_pylist()
    elif path.suffix == ".arrow":
        yield from _iter_arrow(path)
    elif path.name.endswith((".jsonl", ".jsonl.gz")):
        import gzip

        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rt", encoding="utf-8") as handle:
            for number, line in enumerate(handle, start=1):
                if line.strip():
                    yield _json_row(line, path, number)
    elif path.suffix == ".json":
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, list):
            raise ValueError(f"{path}: expected a JSON list of records")
        yield from data
    else:
        raise ValueError(f"{path}: unsupported data file (use {', '.join(DATA_SUFFIXES)} or .json)")


def count_rows(path: Path) -> int:
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        return pq.ParquetFile(path).metadata.num_rows
    if path.suffix == ".jsonl":
        with path.open("rb") as handle:
            return sum(1 for line in handle if line.strip())
    if path.suffix == ".arrow":
        return _arrow_rows(path)
    return sum(1 for _ in iter_file(path))


def _json_row(line: str, path: Path, number: int) -> dict[str, Any]:
    try:
        row = json.loads(line)
    except json.JSONDecodeError as error:
        return {"__error__": f"malformed line {number} of {path.name}: {error}"}
    return row if isinstance(row, dict) else {"__error__": f"line {number} of {path.name} is not a JSON object"}


def _iter_arrow(path: Path) -> Iterator[dict[str, Any]]:
    import pyarrow as pa

    source = pa.memory_map(str(path))
    try:
        reader = pa.ipc.open_stream(source)
    except pa.ArrowInvalid:
        reader = pa.ipc.open_file(source)
        for index in range(reader.num_record_batches):
            yield from _rows(reader.get_batch(index))
        return
    for batch in reader:
        yield from _rows(batch)


def _arrow_rows(path: Path) -> int:
    import pyarrow as pa

    source = pa.memory_map(str(path))
    try:
        return sum(batch.num_rows for batch in pa.ipc.open_stream(source))
    except pa.ArrowInvalid:
        reader = pa.ipc.open_file(source)
        return sum(reader.get_batch(i).num_rows for i in range(reader.num_record_batches))


def _rows(batch) -> Iterator[dict[str, Any]]:
    for start in range(0, batch.num_rows, BATCH_ROWS):
        yield from batch.slice(start, BATCH_ROWS).to_pylist()


def _columns(path: Path) -> list[str]:
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        return list(pq.ParquetFile(path).schema_arrow.names)
    for row in iter_file(path):
        return [k for k in row if k != "__error__"]
    return []


def _files_table(root: Path, files: list[Path]) -> Table:
    length = sum(count_rows(f) for f in files) if all(f.suffix in (".parquet", ".jsonl", ".arrow") for f in files) else None
    return Table(root=root, files=files, columns=_columns(files[0]) if files else [], length=length)


def _disk_table(root: Path, split: Optional[str], default_split: Optional[str], key: str) -> Table:
    import datasets

    loaded = datasets.load_from_disk(str(root))  # memory-mapped: no copy
    if isinstance(loaded, datasets.DatasetDict):
        wanted = split or default_split
        if wanted not in loaded:
            if split is None and len(loaded) == 1:
                wanted = next(iter(loaded))
            else:
                raise ValueError(f"{key}.split: {wanted!r} not in {root}; choose one of: {', '.join(sorted(loaded))}")
        loaded = loaded[wanted]
    loaded = _encoded_images(loaded)
    return Table(root=root, dataset=loaded, columns=list(loaded.column_names), length=len(loaded))


def _hub_table(hub_id: str, split: Optional[str], streaming: bool, key: str) -> Table:
    import datasets

    try:
        loaded = datasets.load_dataset(hub_id, split=split, streaming=streaming)
    except ValueError as error:
        if "split" in str(error).lower():  # datasets names the available splits in its message
            raise ValueError(f"{key}.split: {split!r} not in {hub_id}: {error}") from None
        raise RuntimeError(f"could not load {hub_id!r} ({key}.path): {error}") from error
    except Exception as error:  # hub unreachable, unknown id
        raise RuntimeError(f"could not load {hub_id!r} ({key}.path): {type(error).__name__}: {error}. "
                           "Without internet, set the path to a local copy") from error
    loaded = _encoded_images(loaded)
    columns = list(loaded.column_names or (loaded.features or {}).keys())
    return Table(root=None, dataset=loaded, columns=columns, length=None if streaming else len(loaded))


def _encoded_images(dataset):
    """Image features cast to ``decode=False``: cells stay ``{"bytes", "path"}`` and are validated by ingest."""
    import datasets

    for name, feature in (dataset.features or {}).items():
        if isinstance(feature, datasets.Image) and feature.decode:
            dataset = dataset.cast_column(name, datasets.Image(decode=False))
    return dataset
