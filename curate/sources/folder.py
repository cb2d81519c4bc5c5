"""A folder of user pairs described by ``pairs.jsonl``.

One JSON object per line::

    {"source": "rel/path.jpg", "edited": "rel/path.png", "instruction": "make the car red",
     "id": "optional-user-key", "mask": "optional/mask.png", "edit_type": "optional, see editkit.taxonomy"}

Paths are relative to the folder and must stay inside it after resolving symlinks (an absolute path is accepted
when it points inside); each must name a regular file of at most ``max_file_bytes`` (see :mod:`editkit.safe_paths`).
``allow_outside_root: true`` lifts the folder check for users who mean it. ``mask`` is an image where white marks the
pixels that change. A line that cannot be used (not UTF-8, bad JSON, a missing key, a missing or refused file) still
yields a pair, with ``error`` set, so ingest records it as rejected with the reason instead of dropping it.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from curate.sources import RawPair
from editkit.safe_paths import DEFAULT_MAX_BYTES, UnsafePath, read_inside


@dataclass
class FolderParams:
    path: str = ""  # the folder holding pairs.jsonl and the images
    pairs_file: str = "pairs.jsonl"
    allow_outside_root: bool = False  # True: image paths may point outside `path` (still regular files, size-capped)
    max_file_bytes: int = DEFAULT_MAX_BYTES  # larger image/mask files are rejected unread


class FolderSource:
    def __init__(self, params: FolderParams):
        if not params.path:
            raise ValueError("ingest.folder.path is empty: set it to a folder containing pairs.jsonl")
        self.root = Path(params.path)
        self.allow_outside, self.max_bytes = bool(params.allow_outside_root), params.max_file_bytes
        self.pairs_path = self.root / params.pairs_file
        if not self.pairs_path.is_file():
            raise FileNotFoundError(f"{self.pairs_path} not found: a folder source needs a {params.pairs_file}")
        self.origin = f"folder:{self.root.resolve().name}"

    def _lines(self) -> list[tuple[int, bytes]]:
        # Split the raw bytes on newlines and decode line by line: one bad byte costs its line, not the file.
        data = self.pairs_path.read_bytes()
        return [(n, line) for n, line in enumerate(data.split(b"\n"), start=1) if line.strip()]

    def __len__(self) -> int:
        return len(self._lines())

    def __iter__(self) -> Iterator[RawPair]:
        for line_number, line in self._lines():
            yield self._pair(line_number, line)

    def _pair(self, line_number: int, raw: bytes) -> RawPair:
        key = f"line {line_number}"
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as error:
            return RawPair(self.origin, key, None, None, None, error=f"malformed pairs line: not UTF-8 "
                                                                      f"(byte 0x{raw[error.start]:02x} at {error.start})")
        try:
            entry = json.loads(line)
        except (ValueError, RecursionError) as error:  # JSONDecodeError, too many digits, nesting too deep
            return RawPair(self.origin, key, None, None, None, error=f"malformed pairs line: {_short(error)}")
        if not isinstance(entry, dict):
            return RawPair(self.origin, key, None, None, None, error="malformed pairs line: not a JSON object")
        if entry.get("id") is not None:
            key = str(entry["id"])
        missing = [k for k in ("source", "edited", "instruction") if not entry.get(k)]
        pair = RawPair(self.origin, key, entry.get("instruction"), None, None, edit_type=entry.get("edit_type"),
                       meta={"source_path": entry.get("source"), "edited_path": entry.get("edited"), "line": line_number})
        if missing:
            pair.error = f"malformed pairs line: missing {', '.join(missing)}"
            return pair
        not_text = [k for k in ("source", "edited", "instruction", "mask", "edit_type") if k in entry
                    and entry[k] is not None and not isinstance(entry[k], str)]
        if not_text:
            pair.error = f"malformed pairs line: {', '.join(not_text)} must be strings"
            return pair
        errors = []
        pair.source = self._read(entry["source"], "source", errors)
        pair.edited = self._read(entry["edited"], "edited", errors)
        if entry.get("mask"):
            pair.gt_mask = self._read(entry["mask"], "mask", errors)
            pair.meta["mask_path"] = entry["mask"]
        if errors:
            pair.error = errors[0]
        return pair

    def _read(self, relative: str, role: str, errors: list[str]) -> bytes | None:
        try:
            return read_inside(self.root, relative, allow_outside=self.allow_outside, max_bytes=self.max_bytes)
        except UnsafePath as refused:
            errors.append(f"unsafe {role} path: {refused}")
        except FileNotFoundError:
            errors.append(f"missing {role} image: {relative} not found")
        except OSError as error:
            errors.append(f"missing {role} image: {relative}: {error.strerror or error}")
        return None


def open_folder(ingest, params_path) -> FolderSource:
    """``ingest.source: folder``: the ``ingest.folder`` section."""
    return FolderSource(ingest.folder)


def _short(error: Exception, limit: int = 200) -> str:
    text = str(error) or type(error).__name__
    return text if len(text) <= limit else text[:limit] + "..."
