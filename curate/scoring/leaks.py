"""Benchmark leak check: training rows whose images are near-duplicates of a benchmark item (export stage).

The benchmarks are read from their built outputs on disk (``editkit bench build`` writes ``records/`` + ``images/``
shards, :mod:`editkit.store`; DVC stages ``bench_gedit``, ``bench_imgedit``, ...), never through the ``benchmarks``
package (curate sits upstream of it). A benchmark item's source image is hashed with the same 64-bit pHash that
``select`` uses for near-duplicates (:mod:`curate.scoring.phash`); a training row leaks when its source or its edited
image is within ``max_hamming`` bits of any item.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np

from curate.scoring.phash import hamming, phash

@dataclass
class BenchmarkHashes:
    names: list[str] = field(default_factory=list)  # benchmark name per item (its folder name)
    keys: list[str] = field(default_factory=list)  # the item's key in its benchmark (origin_key, else id)
    hashes: list[int] = field(default_factory=list)
    items: dict[str, int] = field(default_factory=dict)  # benchmark -> items hashed
    unreadable: dict[str, int] = field(default_factory=dict)  # benchmark -> items without a readable image
    missing: list[str] = field(default_factory=list)  # configured paths that hold no built benchmark

    def array(self) -> np.ndarray:
        return np.asarray(self.hashes, dtype=np.uint64)


def is_built(path: Path) -> bool:
    return (path / "records").is_dir() and (path / "images").is_dir()


def benchmark_dirs(paths: Iterable[str | Path]) -> tuple[list[Path], list[str]]:
    """Built benchmarks named by ``paths`` (a built one, or a folder whose subfolders are): (found, missing)."""
    found, missing = [], []
    for entry in paths:
        path = Path(entry)
        if is_built(path):
            found.append(path)
        elif path.is_dir() and any(is_built(child) for child in path.iterdir()):
            found += sorted(child for child in path.iterdir() if is_built(child))
        else:
            missing.append(str(entry))
    return found, missing


def benchmark_hashes(paths: Iterable[str | Path], progress: bool = False) -> BenchmarkHashes:
    """pHash of every benchmark item's source image under ``paths`` (see :func:`benchmark_dirs`)."""
    from tqdm.auto import tqdm

    from editkit import store

    found, missing = benchmark_dirs(paths)
    out = BenchmarkHashes(missing=missing)
    for bench_dir in found:
        name = bench_dir.name
        images = store.ImageStore(bench_dir / "images")
        out.items.setdefault(name, 0)
        shards = list(store.iter_records(bench_dir / "records"))
        for shard, records in tqdm(shards, desc=f"hash {name}", unit="shard", disable=not progress):
            try:
                image_shard = images.shard(shard)
            except Exception:  # noqa: BLE001 - a shard without images: its items are counted as unreadable
                image_shard = None
            for record in records:
                try:
                    value = phash(store.decode_rgb(image_shard.source_bytes(record["id"])))
                except Exception:  # noqa: BLE001 - rejected item (no image) or damaged bytes: counted, not hashed
                    out.unreadable[name] = out.unreadable.get(name, 0) + 1
                    continue
                out.names.append(name)
                out.keys.append(str(record.get("origin_key") or record["id"]))
                out.hashes.append(value)
                out.items[name] += 1
    return out


def find_leaks(ids: list[str], sources: np.ndarray, edited: np.ndarray, has_edited: np.ndarray,
               bench: BenchmarkHashes, max_hamming: int) -> dict[str, str]:
    """``id -> reason`` for each training row whose source (or edited) pHash is within ``max_hamming`` bits of a
    benchmark item's source pHash (the nearest item is named).

    Multi-index hashing, as select's near-duplicate search (:mod:`curate.scoring.dedupe`): two hashes within ``t``
    bits agree exactly on one of ``t + 1`` bands, so only rows and items sharing a band value are compared
    (near-linear in the rows)."""
    from curate.scoring.dedupe import _band, band_slices

    items = bench.array()
    if not len(items) or not len(ids):
        return {}
    has_edited = np.asarray(has_edited, dtype=bool)
    best_distance = np.full(len(ids), 64 + 1, dtype=np.int64)
    best_item = np.zeros(len(ids), dtype=np.int64)
    best_role = np.zeros(len(ids), dtype=np.int64)  # 0 source, 1 edited
    for role, hashes in enumerate((np.asarray(sources, dtype=np.uint64), np.asarray(edited, dtype=np.uint64))):
        rows_in = np.flatnonzero(has_edited) if role == 1 else np.arange(len(ids))
        for shift, width in band_slices(max_hamming):
            item_keys = _band(items, shift, width)
            order = np.argsort(item_keys, kind="stable")
            sorted_keys = item_keys[order]
            row_keys = _band(hashes[rows_in], shift, width)
            left = np.searchsorted(sorted_keys, row_keys, "left")
            counts = np.searchsorted(sorted_keys, row_keys, "right") - left
            if not counts.any():
                continue
            rows = np.repeat(rows_in, counts)
            starts = np.repeat(left, counts)
            offsets = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
            cand = order[starts + offsets]
            distance = hamming(hashes[rows], items[cand]).astype(np.int64)
            better = (distance <= max_hamming) & (distance < best_distance[rows])
            for r, c, d in zip(rows[better], cand[better], distance[better]):  # few: the near-duplicates only
                if d < best_distance[r]:
                    best_distance[r], best_item[r], best_role[r] = d, c, role
    leaks: dict[str, str] = {}
    for r in np.flatnonzero(best_distance <= max_hamming):
        j = int(best_item[r])
        role = ("source", "edited")[int(best_role[r])]
        leaks[ids[r]] = (f"benchmark leak: {role} image near-duplicate of {bench.names[j]} item {bench.keys[j]} "
                         f"(pHash {int(best_distance[r])} bits <= {max_hamming})")
    return leaks


def leak_benchmark(reason: str) -> str:
    """The benchmark named in a :func:`find_leaks` reason."""
    return reason.split(" near-duplicate of ", 1)[1].split(" item ", 1)[0]
