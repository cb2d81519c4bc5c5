"""Exactly-N selection balanced over edit types toward a target distribution, deterministic for a seed.

Quotas are water-filled: each type gets ``N * weight / sum(weights)``; a type with fewer records than its share gives
all of them and the rest is re-shared among the others, until nothing saturates; integer quotas then use the largest
remainders (ties by type name). With equal weights the unsaturated types end up within one record of each other.
Inside a type, records are taken in the order of a seeded hash of their id: a uniform random choice that does not
depend on shard order or on which other records exist.
"""
from __future__ import annotations

import math

import numpy as np


def quotas(available: dict[str, int], weights: dict[str, float], n: int) -> dict[str, int]:
    """Per type how many to take: sums to ``min(n, total available with weight > 0)``."""
    pool = {t: a for t, a in available.items() if a > 0 and weights.get(t, 0) > 0}
    take = {t: 0 for t in available}
    remaining = min(n, sum(pool.values()))
    active = dict(pool)
    while active:
        total_weight = sum(weights[t] for t in active)
        share = {t: remaining * weights[t] / total_weight for t in active}
        saturated = {t for t in active if active[t] <= share[t]}
        if not saturated:
            floors = {t: math.floor(share[t]) for t in active}
            left = remaining - sum(floors.values())
            by_remainder = sorted(active, key=lambda t: (-(share[t] - floors[t]), t))
            for t in by_remainder[:left]:
                floors[t] += 1
            take.update(floors)
            break
        for t in sorted(saturated):
            take[t] = active.pop(t)
            remaining -= take[t]
    return take


def seeded_priority(ids: np.ndarray, seed: int) -> np.ndarray:
    """uint64 pseudo-random priority per id (bytes array ``dtype='S…'``), a pure function of (seed, id)."""
    ids = np.asarray(ids)
    if ids.dtype.kind != "S":
        ids = ids.astype("S")
    width = ids.dtype.itemsize
    padded = ids.view(np.uint8).reshape(len(ids), width) if len(ids) else np.zeros((0, width), np.uint8)
    state = np.full(len(ids), np.uint64(0x9E3779B97F4A7C15) ^ np.uint64(seed & 0xFFFFFFFFFFFFFFFF), dtype=np.uint64)
    with np.errstate(over="ignore"):
        for column in range(width):  # FNV-1a over the bytes, then a splitmix64 finaliser
            state = (state ^ padded[:, column].astype(np.uint64)) * np.uint64(0x100000001B3)
        state ^= state >> np.uint64(30)
        state *= np.uint64(0xBF58476D1CE4E5B9)
        state ^= state >> np.uint64(27)
        state *= np.uint64(0x94D049BB133111EB)
        state ^= state >> np.uint64(31)
    return state


def pick(type_codes: np.ndarray, priority: np.ndarray, take_per_code: dict[int, int]) -> np.ndarray:
    """Boolean mask: for each type code, the ``take`` rows with the lowest priority (ties by row index)."""
    chosen = np.zeros(len(type_codes), dtype=bool)
    order = np.lexsort((np.arange(len(type_codes)), priority, type_codes))
    codes_sorted = type_codes[order]
    for code, take in take_per_code.items():
        start = np.searchsorted(codes_sorted, code, side="left")
        chosen[order[start : start + take]] = True
    return chosen
