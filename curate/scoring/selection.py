"""Selection over compact columns: load (pass 1), decide (vectorised), write (pass 2). Used by the `select` stage.

Only these columns are read in pass 1: id, edit_type, scope, status, reject_stage, the scores the active filters
need, and the pHashes. Pass 2 re-reads one shard at a time as Arrow and replaces status/reject_stage/reject_reason
columns, so no Python dict per record is ever built (10^6 records in well under a minute).
"""
from __future__ import annotations

import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from editkit import schema, store, taxonomy
from editkit.needs import Needs
from curate.scoring import balance, dedupe, filters, funnel

STAGE = "select"
UPSTREAM_ORDER = ("ingest", "rewrite", "masks", "review", "score")
REJECTS_SCHEMA = pa.schema([("id", pa.string()), ("stage", pa.string()), ("reason", pa.string()),
                            ("edit_type", pa.string())])
NEAR_DUPLICATE = "near_duplicate"
BALANCE = "balance"


@dataclass
class Candidates:
    shards: list[str]
    shard_sizes: list[int]
    ids: np.ndarray  # bytes, dtype S
    type_codes: np.ndarray  # int32 index into type_names
    type_names: list[str]
    is_region_edit: np.ndarray  # mask-shape filters apply (see curate.scoring.filters)
    upstream_stage: np.ndarray  # object: reject_stage of records rejected before select, None when ok
    scores: dict[str, np.ndarray]  # name -> float64 (NaN = missing)
    hashes: np.ndarray  # (n, 3) uint64: source, edited, change
    has_hash: np.ndarray
    upstream_reasons: Counter  # reject_reason -> count over records rejected before select


@dataclass
class Decision:
    steps: list[str]  # funnel step names in order
    reasons: list[str]  # reject_reason written for records rejected by each select step ("" for upstream steps)
    step_codes: np.ndarray  # per record: index into steps, -1 = selected
    funnel: list[dict[str, Any]] = field(default_factory=list)
    duplicates: int = 0
    warning: str | None = None
    upstream_reasons: Counter = field(default_factory=Counter)
    skipped_filters: list[str] = field(default_factory=list)  # active filters whose score no record has

    def rejected_by_reason(self) -> dict[str, int]:
        counts = Counter(self.upstream_reasons)
        for index, count in zip(*np.unique(self.step_codes[self.step_codes >= 0], return_counts=True)):
            if self.reasons[index]:
                counts[self.reasons[index]] += int(count)
        return dict(sorted(counts.items()))


def needed_scores(params) -> list[str]:
    names = set(filters.needed_scores(params.filters))
    if params.dedupe.enabled:
        names.add(params.dedupe.keep_by)
    return sorted(names)


# ---------------------------------------------------------------- pass 1
# the record fields pass 1 reads (editkit.needs); each active filter declares its own (filters.Filter.needs)
NEEDS = Needs(("id", "edit_type", "scope", "status", "reject_stage", "reject_reason", "scores", "phash"))


def check_input(params, input_dir: Path) -> None:
    """At the stage's start: every field the active filters and pass 1 read is a column of the input shards."""
    from editkit.needs import require, shard_columns

    columns = shard_columns(input_dir)
    if columns is None:
        return  # no shard: load() says so
    where = f"the input records in {input_dir}"
    filters.check_input(params.filters, columns, where)
    require(f"the {STAGE} stage", NEEDS, columns, where)


def load(input_dir: Path, score_names: list[str]) -> Candidates:
    shards = store.list_shards(input_dir)
    if not shards:
        raise FileNotFoundError(f"{STAGE}: no record shards in {input_dir}; run the score stage first (dvc repro)")
    columns = list(NEEDS.fields)
    type_index: dict[str, int] = {}
    parts: dict[str, list] = {k: [] for k in ("ids", "types", "region", "upstream", "hashes", "has_hash")}
    score_parts: dict[str, list] = {name: [] for name in score_names}
    upstream_reasons: Counter = Counter()
    sizes = []
    for shard in shards:
        table = pq.read_table(Path(input_dir) / f"{shard}.parquet", columns=columns)
        sizes.append(table.num_rows)
        parts["ids"].append(_id_bytes(table["id"]))
        types = [t or "unknown" for t in table["edit_type"].to_pylist()]
        parts["types"].append(np.array([type_index.setdefault(t, len(type_index)) for t in types], dtype=np.int32))
        scope = table["scope"].to_pylist()
        parts["region"].append(np.array([filters.is_region_edit(t, s) for t, s in zip(types, scope)], dtype=bool))
        ok = np.asarray(pc.equal(table["status"], schema.STATUS_OK).fill_null(False))
        stage = table["reject_stage"].to_numpy(zero_copy_only=False).astype(object)
        stage[ok] = None
        stage[~ok & (stage == None)] = "unknown"  # noqa: E711 (elementwise)
        parts["upstream"].append(stage)
        upstream_reasons.update(r or "unknown" for r, good in zip(table["reject_reason"].to_pylist(), ok) if not good)
        scores = table["scores"]
        for name in score_names:
            values = pc.map_lookup(scores, name, "first")
            score_parts[name].append(values.to_numpy(zero_copy_only=False).astype(np.float64))
        phash = table["phash"].combine_chunks()
        hashes = np.stack([phash.field(k).fill_null(0).to_numpy(zero_copy_only=False).astype(np.uint64)
                           for k in ("source", "edited", "change")], axis=1)
        parts["hashes"].append(hashes)
        parts["has_hash"].append(np.asarray(phash.is_valid()))
    return Candidates(
        shards=shards, shard_sizes=sizes, ids=np.concatenate(parts["ids"]).astype("S"),
        type_codes=np.concatenate(parts["types"]), type_names=list(type_index),
        is_region_edit=np.concatenate(parts["region"]), upstream_stage=np.concatenate(parts["upstream"]),
        scores={n: np.concatenate(p) for n, p in score_parts.items()},
        hashes=np.concatenate(parts["hashes"]), has_hash=np.concatenate(parts["has_hash"]),
        upstream_reasons=upstream_reasons,
    )


# ---------------------------------------------------------------- decisions
def decide(params, cand: Candidates) -> Decision:
    n = len(cand.ids)
    steps, reasons = [], []
    codes = np.full(n, -1, dtype=np.int32)
    upstream = np.array([s is not None for s in cand.upstream_stage], dtype=bool)
    present = {s for s in cand.upstream_stage[upstream]}
    for stage in sorted(present, key=lambda s: (UPSTREAM_ORDER.index(s) if s in UPSTREAM_ORDER else 99, s)):
        codes[upstream & (cand.upstream_stage == stage)] = len(steps)
        steps.append(f"rejected upstream ({stage})")
        reasons.append("")
    alive = ~upstream
    skipped = []
    for name, spec, threshold in filters.active_filters(params.filters):
        if not np.isfinite(cand.scores[spec.score]).any():  # score never computed (e.g. CLIP off): not a step
            skipped.append(name)
            continue
        bad = alive & filters.fails(spec, threshold, cand.scores[spec.score], cand.is_region_edit)
        codes[bad] = len(steps)
        steps.append(name)
        reasons.append(f"{STAGE}: " + filters.reason(name, spec, threshold))
        alive &= ~bad
    id_rank = np.empty(n, dtype=np.int64)
    id_rank[np.argsort(cand.ids, kind="stable")] = np.arange(n)
    duplicates = 0
    if params.dedupe.enabled:
        rows = np.flatnonzero(alive & cand.has_hash)
        h = cand.hashes[rows]
        labels = dedupe.cluster_labels(h[:, 0], h[:, 1], h[:, 2], params.dedupe.max_hamming)
        quality = cand.scores[params.dedupe.keep_by][rows]
        keep = dedupe.keep_one_per_cluster(labels, quality, id_rank[rows])
        dropped = rows[~keep]
        duplicates = len(dropped)
        codes[dropped] = len(steps)
        steps.append(NEAR_DUPLICATE)
        reasons.append(f"{STAGE}: near-duplicate of a kept record (pHashes within {params.dedupe.max_hamming} bits)")
        alive[dropped] = False
    rows = np.flatnonzero(alive)
    available = np.bincount(cand.type_codes[rows], minlength=len(cand.type_names))
    weights = {t: float(w) for t, w in params.balance.target.items()} or {t: 1.0 for t in cand.type_names}
    unknown = set(params.balance.target) - set(taxonomy.EDIT_TYPES)
    if unknown:
        raise ValueError(f"select.balance.target names unknown edit type(s) {sorted(unknown)}; "
                         f"known: {sorted(taxonomy.EDIT_TYPES)}")
    take = balance.quotas({t: int(a) for t, a in zip(cand.type_names, available)}, weights, params.target_size)
    chosen = balance.pick(cand.type_codes[rows], balance.seeded_priority(cand.ids[rows], params.seed),
                          {cand.type_names.index(t): k for t, k in take.items()})
    codes[rows[~chosen]] = len(steps)
    steps.append(BALANCE)
    reasons.append(f"{STAGE}: not selected (edit type quota of the target distribution filled; "
                   f"target_size {params.target_size}, seed {params.seed})")
    warning = None
    eligible = int(sum(a for t, a in zip(cand.type_names, available) if weights.get(t, 0) > 0))
    if eligible < params.target_size:
        warning = (f"only {eligible} records pass the filters (target_size {params.target_size}): "
                   "all of them are selected")
        warnings.warn(warning, stacklevel=2)
    decision = Decision(steps, reasons, codes, duplicates=duplicates, warning=warning,
                        upstream_reasons=cand.upstream_reasons, skipped_filters=skipped)
    decision.funnel = funnel.funnel_rows(steps, codes, cand.type_codes, cand.type_names)
    return decision


# ---------------------------------------------------------------- pass 2
def write_outputs(cand: Candidates, decision: Decision, input_dir: Path, output_dir: Path, rejects_dir: Path,
                  metrics_file: Path | None = None, metrics: dict | None = None) -> None:
    """Rewrite every shard with the new status and reason; write all rejected records to the rejects table (and
    ``metrics`` to ``metrics_file``, in the same atomic step)."""
    reason_of_step = np.array([r or None for r in decision.reasons] + [None], dtype=object)
    offset = 0
    files = [Path(metrics_file)] if metrics_file is not None else []
    # One unit: the records, the rejects table and the metrics are replaced together or not at all (store.atomic_dirs).
    with store.atomic_dirs(output_dir, rejects_dir, files=files,
                           owns=[("shard-*.parquet",), ("rejects.parquet",)]) as tmps:
        out_tmp, rej_tmp = tmps[0], tmps[1]
        if metrics_file is not None:
            store.write_metrics(tmps[2], metrics or {})
        writer = pq.ParquetWriter(rej_tmp / "rejects.parquet", REJECTS_SCHEMA, compression="zstd")
        try:
            for shard, size in zip(cand.shards, cand.shard_sizes):
                table = pq.read_table(Path(input_dir) / f"{shard}.parquet")
                codes = decision.step_codes[offset : offset + size]
                if not np.array_equal(_id_bytes(table["id"]),
                                      cand.ids[offset : offset + size]):
                    raise RuntimeError(f"{STAGE}: {shard} changed between the two passes; rerun the stage")
                offset += size
                new = pa.array(reason_of_step[codes].tolist(), type=pa.string())  # codes -1 -> None
                rejected_here = pa.array(pc.is_valid(new))
                table = _set(table, "status", pc.if_else(rejected_here, schema.STATUS_REJECTED, table["status"]))
                table = _set(table, "reject_stage", pc.if_else(rejected_here, STAGE, table["reject_stage"]))
                table = _set(table, "reject_reason", pc.if_else(rejected_here, new, table["reject_reason"]))
                pq.write_table(table, out_tmp / f"{shard}.parquet", compression="zstd")
                rejected = table.filter(pc.equal(table["status"], schema.STATUS_REJECTED))
                writer.write_table(pa.table({
                    "id": rejected["id"], "stage": rejected["reject_stage"], "reason": rejected["reject_reason"],
                    "edit_type": rejected["edit_type"]}, schema=REJECTS_SCHEMA))
        finally:
            writer.close()


def _id_bytes(ids) -> np.ndarray:
    """Ids as a fixed-width bytes array (UTF-8, so any user-supplied id works) for sorting and hashing."""
    return ids.cast(pa.binary()).to_numpy(zero_copy_only=False).astype("S")


def _set(table: pa.Table, name: str, values) -> pa.Table:
    index = table.schema.get_field_index(name)
    return table.set_column(index, table.schema.field(index), values)
