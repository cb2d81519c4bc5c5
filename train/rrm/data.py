"""RRM training data: SFT trajectories and pairwise preferences, every record checked, every rejection explained.

* SFT (jsonl): ``{"source", "instruction", "edited", "trajectory"}`` — image paths relative to the file's folder,
  trajectory text in the RRM format (:mod:`train.rrm.format`); or a ``datasets.save_to_disk`` directory with the
  same columns (images as Image features).
* Preferences (jsonl, what a human rating study exports): ``{"source", "instruction", "image_a", "image_b",
  "winner"}`` with winner in ``A`` / ``B`` / ``tie``.
* Public layout: TIGER-Lab/EditReward-Data (:func:`load_editreward`).

Untrusted input stays contained: a path must be relative and resolve inside the file's folder; images must decode.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional

from editkit.errors import ConfigError
from editkit.mllm.messages import ImagePart

WINNERS = ("A", "B", "tie")


@dataclass(frozen=True)
class SFTRecord:
    source: ImagePart
    instruction: str
    edited: ImagePart
    trajectory: str


@dataclass(frozen=True)
class PreferencePair:
    source: ImagePart
    instruction: str
    image_a: ImagePart
    image_b: ImagePart
    winner: str  # "A" | "B" | "tie"

    def ordered(self) -> tuple[ImagePart, ImagePart]:
        """(winner image, loser image); a tie has none."""
        if self.winner == "tie":
            raise ValueError("a tie has no winner")
        return (self.image_a, self.image_b) if self.winner == "A" else (self.image_b, self.image_a)


def contained_image(root: Path, value: Any, field: str) -> ImagePart:
    """The image at relative path ``value`` inside ``root``; ValueError with the reason otherwise."""
    if not isinstance(value, str) or not value:
        raise ValueError(f"{field}: expected a relative image path, got {type(value).__name__}")
    relative = Path(value)
    if relative.is_absolute():
        raise ValueError(f"{field}: absolute path {value!r} (paths are relative to the file's folder)")
    resolved = (root / relative).resolve()
    if not resolved.is_relative_to(root.resolve()):
        raise ValueError(f"{field}: path {value!r} leaves the file's folder")
    if not resolved.is_file():
        raise ValueError(f"{field}: no file at {value!r}")
    return ImagePart.from_any(resolved.read_bytes())


def image_cell(value: Any, field: str) -> ImagePart:
    """An image column value of a datasets table (PIL image, or {"bytes", "path"}) -> ImagePart."""
    if isinstance(value, dict):
        if not value.get("bytes"):
            raise ValueError(f"{field}: image cell without bytes")
        return ImagePart.from_any(value["bytes"])
    if value is None:
        raise ValueError(f"{field}: missing image")
    return ImagePart.from_any(value)


def _text(record: dict, field: str) -> str:
    value = record.get(field)
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{field}: expected a non-empty string")
    return value


def jsonl_rows(path: Path) -> Iterator[tuple[str, Any]]:
    """(where, object) per non-blank line; a line that is not a JSON object yields (where, ValueError)."""
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            where = f"{path.name}:{number}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                yield where, ValueError(f"not JSON ({error.msg})")
                continue
            yield where, row if isinstance(row, dict) else ValueError("not a JSON object")


def load_sft(path: str | Path, fmt=None) -> tuple[list[SFTRecord], list[dict]]:
    """(records, rejected [{"where", "reason"}]) from a jsonl file or a save_to_disk directory."""
    from editkit.mllm.structured import ParseError
    from train.rrm.format import FormatConfig, parse_trajectory

    fmt, path = fmt or FormatConfig(), Path(path)
    records, rejected = [], []
    for where, row, images in _rows(path, ("source", "edited")):
        try:
            if isinstance(row, Exception):
                raise row
            trajectory = _text(row, "trajectory")
            parse_trajectory(trajectory, fmt)
            records.append(SFTRecord(images("source"), _text(row, "instruction"), images("edited"), trajectory))
        except (ValueError, ParseError) as error:
            rejected.append({"where": where, "reason": str(error)})
    return records, rejected


def load_pairs(path: str | Path) -> tuple[list[PreferencePair], list[dict]]:
    """(pairs, rejected) from a rating-study jsonl (or a save_to_disk directory with the same columns)."""
    path = Path(path)
    pairs, rejected = [], []
    for where, row, images in _rows(path, ("source", "image_a", "image_b")):
        try:
            if isinstance(row, Exception):
                raise row
            winner = row.get("winner")
            if winner not in WINNERS:
                raise ValueError(f"winner: expected one of {WINNERS}, got {winner!r}")
            pairs.append(PreferencePair(images("source"), _text(row, "instruction"), images("image_a"),
                                        images("image_b"), winner))
        except ValueError as error:
            rejected.append({"where": where, "reason": str(error)})
    return pairs, rejected


def _rows(path: Path, image_fields: tuple[str, ...]):
    """(where, row or error, image getter) over a jsonl file or a datasets directory."""
    if path.is_dir():
        import datasets

        table = datasets.load_from_disk(str(path))
        for index, row in enumerate(table):
            yield f"{path.name}[{index}]", row, (lambda field, row=row: image_cell(row.get(field), field))
    elif path.is_file():
        root = path.parent
        for where, row in jsonl_rows(path):
            yield where, row, (lambda field, row=row: contained_image(root, row.get(field)
                                                                      if isinstance(row, dict) else None, field))
    else:
        raise ConfigError(f"no dataset at {path} (a .jsonl file or a datasets directory)")


EDITREWARD_VOTES = {"leftvote": "A", "rightvote": "B", "tie": "tie"}


def load_editreward(source: str, split: str = "train", limit: Optional[int] = None
                    ) -> tuple[list[PreferencePair], list[dict]]:
    """TIGER-Lab/EditReward-Data: ``source_img``, ``left_output_image``, ``right_output_image``, ``instruction``,
    ``vote_type`` (leftvote / rightvote / tie). ``source``: a hub id, a folder of its parquet files, or a
    save_to_disk directory. Left is A, right is B."""
    import datasets

    where = Path(source)
    saved = ("dataset_info.json", "state.json", "dataset_dict.json")
    if where.is_dir() and any((where / name).exists() for name in saved):
        table = datasets.load_from_disk(str(where))
        table = table[split] if isinstance(table, datasets.DatasetDict) else table
    elif where.is_dir():
        files = sorted(str(p) for p in where.rglob("*.parquet"))
        if not files:
            raise ConfigError(f"no parquet files under {where}")
        table = datasets.load_dataset("parquet", data_files=files, split="train")
    else:
        table = datasets.load_dataset(source, split=split)
    pairs, rejected = [], []
    for index, row in enumerate(table):
        if limit is not None and len(pairs) >= limit:
            break
        try:
            vote = row.get("vote_type")
            if vote not in EDITREWARD_VOTES:
                raise ValueError(f"vote_type: expected one of {sorted(EDITREWARD_VOTES)}, got {vote!r}")
            pairs.append(PreferencePair(image_cell(row.get("source_img"), "source_img"), _text(row, "instruction"),
                                        image_cell(row.get("left_output_image"), "left_output_image"),
                                        image_cell(row.get("right_output_image"), "right_output_image"),
                                        EDITREWARD_VOTES[vote]))
        except ValueError as error:
            rejected.append({"where": f"{row.get('unique_key') or index}", "reason": str(error)})
    return pairs, rejected
