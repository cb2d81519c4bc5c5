"""Build a masked benchmark: read the public release, propose masks, write records + images (one DVC stage each).

Output (``data/bench/<bench>/``): ``records/`` and ``images/`` shards (see :mod:`benchmarks.items`). Every item of
the release is kept: unreadable ones are rejected records with a reason. Masks are proposals until reviewed: the
review merge (`editkit annotate merge`) turns ``needs_review`` items into ``mask_source="human"`` records.
"""
from __future__ import annotations

import io
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from benchmarks import gedit, imgedit, proposals
from benchmarks.items import BenchItem, to_record, write_benchmark
from editkit import schema, store
from editkit.mllm.config import ClientConfig
from editkit.safe_paths import UnsafePath, read_inside

BENCHES = ("gedit", "imgedit")


@dataclass
class BenchParams:
    """``params.yaml`` section ``bench`` (see the README, "Benchmarks")."""

    gedit_path: str = "data/bench_fixture/gedit"
    imgedit_path: str = "data/bench_fixture/imgedit"
    gedit_languages: list[str] = field(default_factory=lambda: ["en"])
    imgedit_image_root: str | None = None
    masks_dir: dict[str, str] = field(default_factory=dict)  # bench -> folder of known masks (<key>.png)
    grounding: dict[str, Any] = field(default_factory=dict)  # curate.masks.grounded.GroundingParams; {} = none
    fixture_items: int = 4
    judge: ClientConfig = field(default_factory=ClientConfig)  # backend "none" = no judge scores
    allow_outside_root: bool = False  # True: image paths in the release may point outside its folder


def read_items(bench: str, path: Path | str, params: BenchParams) -> Iterator[tuple[BenchItem, str | None]]:
    if bench == "gedit":
        for item in gedit.read_gedit(path, tuple(params.gedit_languages), params.allow_outside_root):
            yield item, gedit.edit_type(item.category)
    elif bench == "imgedit":
        for item in imgedit.read_imgedit(path, params.imgedit_image_root, params.allow_outside_root):
            yield item, imgedit.edit_type(item.category)
    else:
        raise ValueError(f"unknown benchmark {bench!r}; choose one of {BENCHES}")


def build(bench: str, path: Path | str, out_dir: Path | str, params: BenchParams | None = None,
          masks_dir: Path | str | None = None, progress: bool = True) -> dict[str, Any]:
    """Read ``path``, propose masks, write ``out_dir``; returns the build statistics (also the DVC metrics)."""
    from tqdm.auto import tqdm

    params = params or BenchParams()
    masks_dir = masks_dir or params.masks_dir.get(bench)
    masker = proposals.load_masker(params.grounding)
    foreground = masker.params.foreground_prompt if masker is not None else "main subject"
    chunk = masker.params.batch_size if masker is not None else 64
    started = time.perf_counter()
    stats: dict[str, Any] = {"bench": bench, "items": 0, "rejected": {}, "mask_source": {}, "needs_review": 0}

    def finish(batch: list[tuple[BenchItem, dict[str, Any], bytes]]) -> Iterator[tuple[dict[str, Any], bytes]]:
        ok = [(item, record, store.decode_rgb(data)) for item, record, data in batch if schema.is_ok(record)]
        for _, record, _ in ok:
            record["target_phrases"] = proposals.grounding_phrases(record, foreground)
        proposals.propose([r for _, r, _ in ok], [image for _, _, image in ok], masker)
        if masks_dir is not None:
            for item, record, _ in ok:
                _apply_mask_file(record, Path(masks_dir), f"{item.key}.png")
        for _, record, data in batch:
            _count(stats, record)
            yield record, data

    def records() -> Iterator[tuple[dict[str, Any], bytes]]:
        batch: list[tuple[BenchItem, dict[str, Any], bytes]] = []
        for item, edit_type in tqdm(read_items(bench, path, params), desc=f"build {bench}", disable=not progress):
            batch.append((item, *to_record(item, edit_type)))
            if len(batch) == chunk:
                yield from finish(batch)
                batch = []
        yield from finish(batch)

    info = {"bench": bench, "source": str(path),
            "judge_prompts": imgedit.find_prompts(path) if bench == "imgedit" else None}
    write_benchmark(out_dir, records(), info)
    stats["seconds"] = round(time.perf_counter() - started, 3)
    return stats


def _apply_mask_file(record: dict[str, Any], masks_dir: Path, name: str) -> None:
    """Apply ``masks_dir/name`` when it exists; the name comes from the item key (data), so it must stay inside."""
    from PIL import Image, UnidentifiedImageError

    try:
        data = read_inside(masks_dir, name)
    except FileNotFoundError:
        return
    except UnsafePath as refused:
        schema.reject(record, "bench_build", f"unsafe mask path: {refused}")
        return
    try:
        with Image.open(io.BytesIO(data)) as image:
            mask = np.asarray(image.convert("L")) >= 128
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError) as error:
        schema.reject(record, "bench_build", f"corrupt mask file {name}: {type(error).__name__}")
        return
    proposals.apply_known_mask(record, mask)


def _count(stats: dict[str, Any], record: dict[str, Any]) -> None:
    stats["items"] += 1
    if not schema.is_ok(record):
        reason = record["reject_reason"].split(":")[0]
        stats["rejected"][reason] = stats["rejected"].get(reason, 0) + 1
        return
    source = record["mask_source"]
    stats["mask_source"][source] = stats["mask_source"].get(source, 0) + 1
    stats["needs_review"] += proposals.NEEDS_REVIEW in record["flags"]
