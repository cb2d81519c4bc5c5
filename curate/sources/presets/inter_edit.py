"""Inter-Edit-Train (``a1557811266/Inter-Edit-Train``): ~1.1M local edits with masks and boxes, read from its release.

Layout (the hub repository): ``metadata/train-NNNNN-of-NNNNN.jsonl.gz`` manifests and ``asset_shards/asset-NNNNN-of-
NNNNN.tar`` image shards, one manifest per shard. Each manifest line has ``instruction``, ``edit_type`` (``Local``,
``Add``, ``Remove``, ``Texture``), ``bounding_box`` (``[x1, y1, x2, y2]``), ``bbox_reference_dimensions`` (the
``[width, height]`` the box is given in), ``better_data`` and the anonymised locations of the source, target and mask
assets. The card names those locations without spelling their keys, so each is looked up under the usual names
(``source`` / ``source_image`` / ``source_path`` / ``src``, ``target`` / ``target_image`` / ``target_path`` /
``edited``, ``mask`` / ``mask_image`` / ``mask_path``); a location is a member name (in the shard with the manifest's
number), ``<shard>.tar/<member>``, ``<shard>.tar::<member>`` or ``{"shard"|"tar": ..., "member"|"path"|"name": ...}``.

Members are read straight from the tar shards (an index of names per shard, regular files only, size-capped): nothing
is unpacked and no member name is ever used as a filesystem path. The mask (white = edit, or any encoding
:func:`curate.sources.presets.masks.read_mask` reads) is read at the source's resolution; the box is kept in ``meta``
(as given, and as ``box_xyxy`` scaled to the source image). ``origin_key`` is ``<manifest>/<line>``. The card states
no licence: ``unknown``.
"""
from __future__ import annotations

import re
import tarfile
from pathlib import Path
from typing import Any, Optional

from curate.sources import RawPair
from curate.sources.presets import register_preset, tables
from curate.sources.presets.base import TablePreset, map_edit_type, table, text_list
from editkit.safe_paths import DEFAULT_MAX_BYTES

EDIT_TYPES = table({"Add": "add", "Remove": "remove", "Texture": "material", "Local": None})
ROLE_KEYS = {
    "source": ("source", "source_image", "source_path", "src", "src_image", "input", "input_image"),
    "edited": ("target", "target_image", "target_path", "edited", "edited_image", "output", "output_image"),
    "mask": ("mask", "mask_image", "mask_path"),
}
_NUMBERED = re.compile(r"-(\d+)-of-(\d+)")
OPEN_SHARDS = 2  # tar shards kept open at once (manifests are read in shard order)


class Shards:
    """Members of the release's tar shards by name, read without unpacking."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.open: dict[str, tuple[tarfile.TarFile, dict[str, tarfile.TarInfo]]] = {}

    def read(self, shard: str, member: str) -> bytes:
        name = Path(shard).name
        if name not in self.open:
            path = self.folder / name
            if not path.is_file():
                raise FileNotFoundError(f"shard {name} not found in {self.folder}")
            while len(self.open) >= OPEN_SHARDS:
                self.open.pop(next(iter(self.open)))[0].close()
            archive = tarfile.open(path)  # noqa: SIM115 (kept open across rows, closed when evicted)
            self.open[name] = (archive, {info.name: info for info in archive.getmembers() if info.isfile()})
        archive, index = self.open[name]
        info = index.get(member) or index.get(member.lstrip("./"))
        if info is None:
            raise FileNotFoundError(f"{member} not in {name}")
        if info.size > DEFAULT_MAX_BYTES:
            raise ValueError(f"{member} in {name} is {info.size} bytes (limit {DEFAULT_MAX_BYTES})")
        handle = archive.extractfile(info)
        return handle.read() if handle is not None else b""


@register_preset("inter_edit")
class InterEditTrain(TablePreset):
    hub_id = ""  # tar shards + gzipped manifests, not a loadable dataset: download the repository and give the folder
    dataset = "a1557811266/Inter-Edit-Train"
    required = ("instruction",)

    def open(self) -> tables.Table:
        if not self.path:
            raise ValueError("ingest.preset.path: inter_edit needs a local copy of Inter-Edit-Train (its metadata/ "
                             "and asset_shards/ folders)")
        path = Path(self.path)
        if path.is_file():
            root = path.parent.parent if path.parent.name == "metadata" else path.parent
            found = tables.Table(root=root, files=[path], columns=tables._columns(path))
        elif path.is_dir():
            metadata = path / "metadata" if (path / "metadata").is_dir() else path
            found = tables.open_table(str(metadata), self.params.split, "train", False)
            found.root = path
            found.columns = tables._columns(found.files[0]) if found.files else []
        else:
            raise ValueError(f"ingest.preset.path: {path} does not exist")
        assets = found.root / "asset_shards"
        self.shards = Shards(assets if assets.is_dir() else found.root)
        return found

    def pairs(self):
        for path in self.table.files:
            for index, row in enumerate(tables.iter_file(path)):
                manifest = path.name.removesuffix(".gz").removesuffix(".jsonl")
                if "__error__" in row:
                    yield RawPair(self.origin, f"{manifest}/{index}", None, None, None,
                                  error=f"malformed row: {row['__error__']}")
                    continue
                yield self.row_pair(row, index, manifest)

    def row_pair(self, row: dict[str, Any], index: int, manifest: str) -> RawPair:
        errors: list[str] = []
        meta = {"row": index, "manifest": manifest,
                **{k: row[k] for k in ("bounding_box", "bbox_reference_dimensions", "better_data") if k in row}}
        pair = RawPair(self.origin, f"{manifest}/{index}", row.get("instruction"), None, None,
                       instruction_variants=text_list(row.get("instruction")), meta=meta)
        pair.source = self.asset(row, "source", manifest, errors)
        pair.edited = self.asset(row, "edited", manifest, errors)
        if not errors:
            mask = self.asset(row, "mask", manifest, errors, required=False)
            self.read_mask(pair, mask, errors)
            box = _scaled_box(row.get("bounding_box"), row.get("bbox_reference_dimensions"), pair.source)
            if box is not None:
                pair.meta["box_xyxy"] = box
        map_edit_type(row.get("edit_type"), EDIT_TYPES, pair)
        pair.error = errors[0] if errors else None
        return pair

    def asset(self, row: dict[str, Any], role: str, manifest: str, errors: list[str],
              required: bool = True) -> Optional[bytes]:
        value = next((row[k] for k in ROLE_KEYS[role] if row.get(k)), None)
        if value is None:
            if required:
                errors.append(f"missing {role} image: no {role} location in the manifest line")
            return None
        located = _location(value, manifest)
        if located is None:
            errors.append(f"missing {role} image: unreadable location {value!r}")
            return None
        try:
            return self.shards.read(*located)
        except (OSError, ValueError, tarfile.TarError) as error:
            errors.append(f"missing {role} image: {error}")
            return None


def _location(value: Any, manifest: str) -> Optional[tuple[str, str]]:
    """A manifest's asset location -> (shard file name, member name)."""
    if isinstance(value, dict):
        shard = value.get("shard") or value.get("tar")
        member = value.get("member") or value.get("path") or value.get("name")
        if isinstance(member, str) and member:
            return (str(shard) if shard else _shard_of(manifest)), member
        return None
    if not isinstance(value, str) or not value:
        return None
    for separator in ("::", ".tar/"):
        if separator in value:
            shard, member = value.split(separator, 1)
            return (shard + ".tar" if separator == ".tar/" else shard), member
    return _shard_of(manifest), value


def _shard_of(manifest: str) -> str:
    """``train-00023-of-00275`` -> ``asset-00023-of-00275.tar`` (the shard with the manifest's number)."""
    match = _NUMBERED.search(manifest)
    return f"asset-{match.group(1)}-of-{match.group(2)}.tar" if match else "asset.tar"


def _scaled_box(box: Any, reference: Any, source: Optional[bytes]) -> Optional[list[float]]:
    """The ``[x1, y1, x2, y2]`` box given in ``reference`` ``[width, height]``, in the source image's pixels."""
    if not (isinstance(box, (list, tuple)) and len(box) == 4 and source is not None):
        return None
    try:
        from PIL import Image
        import io

        with Image.open(io.BytesIO(source)) as image:
            width, height = image.size
        ref_w, ref_h = (float(reference[0]), float(reference[1])) if reference else (width, height)
        sx, sy = width / ref_w, height / ref_h
        return [float(box[0]) * sx, float(box[1]) * sy, float(box[2]) * sx, float(box[3]) * sy]
    except Exception:  # a malformed box is kept as given, without the scaled copy
        return None
