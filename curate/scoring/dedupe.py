"""Near-duplicate clusters over the whole candidate set from pHashes, keeping one record per cluster.

Two pairs are near-duplicates when their source, edited and change hashes are each within ``max_hamming`` bits.
Candidate pairs come from multi-index hashing (pigeonhole): split a 64-bit hash into ``t+1`` bands; two hashes within
``t`` bits agree exactly on at least one band. Requiring both the source and the change hash to match gives
``(t+1)^2`` band combinations of ~2*64/(t+1) bits each, so random collisions are rare and the work stays near-linear
(10^6 records in seconds). Candidates are verified on all three hashes; clusters are the connected components.
Exact duplicates are collapsed first so a thousand copies cost one row, not half a million pairs.
"""
from __future__ import annotations

import numpy as np

from curate.scoring.phash import hamming


def band_slices(max_hamming: int, bits: int = 64) -> list[tuple[int, int]]:
    """(shift, width) of ``max_hamming + 1`` contiguous bands covering ``bits`` bits."""
    count = max_hamming + 1
    if count > bits:
        raise ValueError(f"max_hamming must be < {bits}, got {max_hamming}")
    widths = [bits // count + (1 if i < bits % count else 0) for i in range(count)]
    shifts = np.cumsum([0] + widths[:-1])
    return [(int(s), int(w)) for s, w in zip(shifts, widths)]


def _band(values: np.ndarray, shift: int, width: int) -> np.ndarray:
    return (values >> np.uint64(shift)) & np.uint64((1 << width) - 1)


def _same_key_pairs(keys: np.ndarray):
    """Yield (i, j) index arrays of all pairs with equal keys, one offset at a time (memory ~ largest group)."""
    order = np.argsort(keys, kind="stable")
    sorted_keys = keys[order]
    starts = np.flatnonzero(np.r_[True, sorted_keys[1:] != sorted_keys[:-1]])
    sizes = np.diff(np.r_[starts, len(keys)])
    starts, sizes = starts[sizes > 1], sizes[sizes > 1]
    offset = 1
    while len(sizes):
        counts = sizes - offset
        first = np.repeat(starts, counts) + (np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts))
        yield order[first], order[first + offset]
        offset += 1
        keep = sizes > offset
        starts, sizes = starts[keep], sizes[keep]


def cluster_labels(source: np.ndarray, edited: np.ndarray, change: np.ndarray, max_hamming: int) -> np.ndarray:
    """Connected-component label per row (rows in one cluster are near-duplicates, transitively)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    triples = np.stack([np.asarray(a, dtype=np.uint64) for a in (source, edited, change)], axis=1)
    if len(triples) == 0:
        return np.zeros(0, dtype=np.int64)
    unique, inverse = np.unique(triples, axis=0, return_inverse=True)
    inverse = inverse.ravel()
    src, edt, chg = unique[:, 0], unique[:, 1], unique[:, 2]
    rows, cols = [], []
    bands = band_slices(max_hamming)
    for s_shift, s_width in bands:
        src_band = _band(src, s_shift, s_width)
        for c_shift, c_width in bands:
            keys = (src_band << np.uint64(c_width)) | _band(chg, c_shift, c_width)
            for i, j in _same_key_pairs(keys):
                close = ((hamming(src[i], src[j]) <= max_hamming) & (hamming(edt[i], edt[j]) <= max_hamming)
                         & (hamming(chg[i], chg[j]) <= max_hamming))
                rows.append(i[close])
                cols.append(j[close])
    n = len(unique)
    row = np.concatenate(rows) if rows else np.zeros(0, dtype=np.int64)
    col = np.concatenate(cols) if cols else np.zeros(0, dtype=np.int64)
    graph = coo_matrix((np.ones(len(row), dtype=np.int8), (row, col)), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    return labels[inverse]


def keep_one_per_cluster(labels: np.ndarray, quality: np.ndarray, id_rank: np.ndarray) -> np.ndarray:
    """Boolean keep-mask: per cluster the highest ``quality`` (NaN lowest), ties by the smallest ``id_rank``."""
    if len(labels) == 0:
        return np.zeros(0, dtype=bool)
    score = np.where(np.isnan(quality), -np.inf, quality)
    order = np.lexsort((id_rank, -score, labels))
    first = np.r_[True, labels[order][1:] != labels[order][:-1]]
    keep = np.zeros(len(labels), dtype=bool)
    keep[order[first]] = True
    return keep
