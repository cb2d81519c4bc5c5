"""A folder of user pairs described by ``pairs.jsonl``.

One JSON object per line::

    {"source": "rel/path.jpg", "edited": "rel/path.png", "instruction": "make the car red",
     "id": "optional-user-key", "mask": "optional/mask.png", "edit_type": "optional, see editkit.taxonomy"}

Paths are relative to the folder and must stay inside it after resolving symlinks (an absolute path is accepted
when it points inside); each must name a regular file of at most ``max_file_bytes`` (see :mod:`editkit.safe_paths`).
The pairs file itself is held to the same rule: a ``pairs.jsonl`` that is a symlink to a file outside the folder (or
not a regular file) is refused with a one-line error before anything is read. ``allow_outside_root: true`` lifts the
folder check for users who mean it. ``mask`` is an image where white marks the pixels that change. A line that cannot
be used (not UTF-8, bad JSON, a missing key, a missing or refused file, longer than ``max_line_bytes``) still yields a
pair, with ``error`` set, so ingest records it as rejected with the reason instead of dropping it.

Non-fatal findings become flags on the record, which is kept:

* ``duplicate_user_id``: the line's ``id`` was already used by an earlier line (``meta.duplicate_user_id`` names it;
  ingest's own duplicate check is by content, so two different pairs sharing a user id are both kept).
* ``animated_<role>_first_frame``: the source, edited image or mask is an animated GIF, APNG or WebP (more than one
  frame); its first frame is used, on purpose (``meta.frames`` holds the frame counts).

The pairs file is streamed line by line (never read whole), so memory does not grow with its length; repeated ids
are tracked as 64-bit hashes (~70 bytes per distinct id).
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, BinaryIO, Iterator

from curate.sources import RawPair
from editkit.errors import ConfigError
from editkit.safe_paths import DEFAULT_MAX_BYTES, UnsafePath, read_inside, resolve_inside
from editkit.config_meta import Range

MAX_LINE_BYTES = 1 << 20  # a pairs line is a few hundred bytes; a longer one is a malformed line, not a memory hog


@dataclass
class FolderParams:
    path: str = ""
    """the folder holding pairs.jsonl and the images"""
    pairs_file: str = "pairs.jsonl"
    """the jsonl file listing the pairs, relative to path"""
    allow_outside_root: bool = False
    """True: image paths may point outside `path` (still regular files, size-capped)"""
    max_file_bytes: Annotated[int, Range(ge=1)] = DEFAULT_MAX_BYTES
    """larger image/mask files are rejected unread"""
    max_line_bytes: Annotated[int, Range(ge=1)] = MAX_LINE_BYTES
    """longer pairs lines are rejected (malformed), never held in memory"""


class FolderSource:
    def __init__(self, params: FolderParams):
        if not params.path:
            raise ValueError("ingest.folder.path is empty: set it to a folder containing pairs.jsonl")
        self.root = Path(params.path)
        self.allow_outside, self.max_bytes = bool(params.allow_outside_root), params.max_file_bytes
        self.max_line = int(params.max_line_bytes)
        self.pairs_name = params.pairs_file
        self.pairs_path = self._resolve_pairs()
        self.origin = f"folder:{self.root.resolve().name}"
        self._seen_ids: set[int] = set()

    def _resolve_pairs(self) -> Path:
        """The pairs file, contained like the images (a symlink out of the folder is refused)."""
        try:
            return resolve_inside(self.root, self.pairs_name, allow_outside=self.allow_outside, max_bytes=None)
        except FileNotFoundError:
            raise FileNotFoundError(f"{self.root / self.pairs_name} not found: a folder source needs a "
                                    f"{self.pairs_name}") from None
        except UnsafePath as refused:
            raise ConfigError(f"ingest.folder: pairs file refused: {refused}") from None

    def _open(self) -> BinaryIO:
        path = self._resolve_pairs()  # again: the file may have been swapped since the last pass
        flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOFOLLOW", 0)
        try:
            fd = os.open(path, flags)
        except OSError as error:
            raise ConfigError(f"ingest.folder: pairs file refused: {self.pairs_name}: cannot open: "
                              f"{error.strerror or error}") from None
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise ConfigError(f"ingest.folder: pairs file refused: {self.pairs_name}: not a regular file")
        return os.fdopen(fd, "rb", buffering=1 << 16)

    def _lines(self) -> Iterator[tuple[int, bytes | None]]:
        """``(line number, raw bytes)`` of every non-blank line, streamed; ``None`` for a line over the limit.

        Split on newlines and decoded line by line later: one bad byte costs its line, not the file."""
        with self._open() as handle:
            number = 0
            while True:
                raw = handle.readline(self.max_line + 1)
                if not raw:
                    return
                number += 1
                if len(raw) > self.max_line and not raw.endswith(b"\n"):
                    while (rest := handle.readline(1 << 16)) and not rest.endswith(b"\n"):
                        pass  # skip the rest of the long line, unread into memory
                    yield number, None
                    continue
                if raw.strip():
                    yield number, raw.rstrip(b"\n")

    def __len__(self) -> int:
        return sum(1 for _ in self._lines())

    def __iter__(self) -> Iterator[RawPair]:
        self._seen_ids = set()
        for line_number, line in self._lines():
            yield self._pair(line_number, line)

    def _pair(self, line_number: int, raw: bytes | None) -> RawPair:
        key = f"line {line_number}"
        if raw is None:
            return RawPair(self.origin, key, None, None, None,
                           error=f"malformed pairs line: longer than {self.max_line} bytes")
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
        duplicate = False
        if entry.get("id") is not None:
            key = str(entry["id"])
            digest = int.from_bytes(hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=8).digest(),
                                    "little")
            duplicate = digest in self._seen_ids
            self._seen_ids.add(digest)
        missing = [k for k in ("source", "edited", "instruction") if not entry.get(k)]
        pair = RawPair(self.origin, key, entry.get("instruction"), None, None, edit_type=entry.get("edit_type"),
                       meta={"source_path": entry.get("source"), "edited_path": entry.get("edited"), "line": line_number})
        if duplicate:
            pair.flags.append("duplicate_user_id")
            pair.meta["duplicate_user_id"] = key
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
        for role, data in (("source", pair.source), ("edited", pair.edited), ("mask", pair.gt_mask)):
            frames = animation_frames(data)
            if frames > 1:
                pair.flags.append(f"animated_{role}_first_frame")
                pair.meta.setdefault("frames", {})[role] = frames
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


_ANIMATABLE = (b"GIF87a", b"GIF89a", b"\x89PNG\r\n\x1a\n")


def animation_frames(data: bytes | None) -> int:
    """Frames in an animated GIF, APNG or WebP (1 for a still image, anything else, or unreadable bytes).

    Reads the container's header and frame table only (no pixels are decoded); every image reader in Pillow uses
    the first frame, which is what ingest keeps."""
    if not data:
        return 1
    if data.startswith(b"\x89PNG"):
        idat = data.find(b"IDAT")
        if b"acTL" not in data[: idat if idat >= 0 else len(data)]:  # APNG's animation chunk precedes the pixels
            return 1
    elif data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        if data[12:16] != b"VP8X" or len(data) < 21 or not data[20] & 0x02:  # the extended header's animation bit
            return 1
    elif not data.startswith(_ANIMATABLE):
        return 1
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as image:
            if not getattr(image, "is_animated", False):
                return 1
            return max(int(getattr(image, "n_frames", 2)), 2)
    except Exception:  # noqa: BLE001 - unreadable bytes are for ingest's validation to reject, with its reason
        return 1


def _short(error: Exception, limit: int = 200) -> str:
    text = str(error) or type(error).__name__
    return text if len(text) <= limit else text[:limit] + "..."
