"""Selection: exact counts, balance, determinism, near-duplicate clusters, reasons for every reject, the funnel."""
import json
from collections import Counter

import numpy as np
import pyarrow.parquet as pq
import pytest

from editkit import schema, store
from curate.scoring import balance, dedupe
from curate.scoring.phash import hamming
from curate.stages import select as select_stage


def _record(i, edit_type, rng, **scores):
    values = {"mask_area": 0.1, "mask_components": 1.0, "bg_psnr": 35.0, "bg_ssim": 0.95, **scores}
    hashes = {k: int(rng.integers(0, 2**63, dtype=np.int64)) * 2 + 1 for k in ("source", "edited", "change")}
    return schema.new_record(id=f"r{i:06d}", edit_type=edit_type, scope="local", scores=values, phash=hashes)


def _write(tmp_path, records, shard_size=7):
    directory = tmp_path / "score"
    for k in range(0, len(records), shard_size):
        store.write_records(directory, store.shard_name(k // shard_size), records[k : k + shard_size])
    return directory


def _run(tmp_path, records, **overrides):
    params = select_stage.SelectParams(**overrides)
    metrics = select_stage.run(params, _write(tmp_path, records), tmp_path / "out", tmp_path / "rejects")
    out = [r for _, shard in store.iter_records(tmp_path / "out") for r in shard]
    return metrics, out


def _selected(out):
    return Counter(r["edit_type"] for r in out if r["status"] == "ok")


def test_exact_counts_with_a_saturated_type(tmp_path):
    rng = np.random.default_rng(0)
    records = [_record(i, t, rng) for i, t in enumerate(["add"] * 100 + ["remove"] * 50 + ["recolor"] * 10)]
    metrics, out = _run(tmp_path, records, target_size=90)
    assert len(out) == 160 and metrics["selected"] == 90
    assert _selected(out) == {"add": 40, "remove": 40, "recolor": 10}
    assert metrics["warning"] is None


def test_uniform_balance_within_one_and_target_weights(tmp_path):
    rng = np.random.default_rng(1)
    types = ["add", "remove", "recolor", "style"]
    records = [_record(i, types[i % 4], rng) for i in range(200)]
    _, out = _run(tmp_path / "a", records, target_size=11)
    counts = _selected(out)
    assert sum(counts.values()) == 11 and max(counts.values()) - min(counts.values()) <= 1
    _, out = _run(tmp_path / "b", records, target_size=40, balance=select_stage.BalanceParams({"add": 3, "remove": 1}))
    assert _selected(out) == {"add": 30, "remove": 10}


def test_quotas_properties_on_random_inputs():
    rng = np.random.default_rng(2)
    for _ in range(200):
        k = int(rng.integers(1, 8))
        available = {f"t{i}": int(rng.integers(0, 50)) for i in range(k)}
        n = int(rng.integers(0, 300))
        take = balance.quotas(available, {t: 1.0 for t in available}, n)
        assert sum(take.values()) == min(n, sum(available.values()))
        assert all(0 <= take[t] <= available[t] for t in available)
        unsaturated = [take[t] for t in available if take[t] < available[t]]
        if unsaturated:  # a type left with spare records is within one of every type that got more
            assert max(take.values()) - min(unsaturated) <= 1


def test_too_few_pass_selects_all_with_warning(tmp_path):
    rng = np.random.default_rng(3)
    records = [_record(i, "add", rng) for i in range(10)] + [_record(10 + i, "add", rng, bg_psnr=5.0) for i in range(4)]
    with pytest.warns(UserWarning, match="only 10 records pass"):
        metrics, out = _run(tmp_path, records, target_size=100)
    assert metrics["selected"] == 10 and "only 10" in metrics["warning"]


def test_deterministic_for_a_seed_and_seed_matters(tmp_path):
    rng = np.random.default_rng(4)
    records = [_record(i, ["add", "remove"][i % 2], rng) for i in range(120)]
    records[7]["id"] = "user-supplied-ïd-✓"  # ids from user folders need not be ASCII
    chosen = []
    for run, seed in enumerate([0, 0, 1]):
        _, out = _run(tmp_path / str(run), [dict(r) for r in records], target_size=30, seed=seed)
        chosen.append(sorted(r["id"] for r in out if r["status"] == "ok"))
    assert chosen[0] == chosen[1] and chosen[0] != chosen[2]
    # independent of sharding: a different shard size selects the same ids
    params = select_stage.SelectParams(target_size=30, seed=0)
    select_stage.run(params, _write(tmp_path / "resharded", records, shard_size=50), tmp_path / "o2", tmp_path / "r2")
    assert sorted(r["id"] for _, s in store.iter_records(tmp_path / "o2") for r in s if r["status"] == "ok") == chosen[0]


def test_filters_reasons_funnel_and_rejects_table(tmp_path):
    rng = np.random.default_rng(5)
    records = [_record(i, "add", rng) for i in range(20)]
    records[0]["scores"]["mask_area"] = 0.0001  # too small
    records[1]["scores"]["bg_psnr"] = 12.0  # background changed
    records[2]["scores"]["bg_ssim"] = float("nan")  # missing score passes
    records[3]["scores"]["mask_area"] = 1.0  # whole-image edit: area filters do not apply
    records[3]["scope"] = "global"
    records[3]["edit_type"] = "style"
    schema.reject(records[4], "ingest", "corrupt image: truncated")
    records[5]["edit_type"], records[5]["scores"]["mask_area"] = "background", 0.97  # complement of a small subject
    metrics, out = _run(tmp_path, records, target_size=12)
    by_id = {r["id"]: r for r in out}
    assert by_id["r000000"]["reject_reason"] == "select: mask_area_min: mask_area < 0.002"
    assert by_id["r000001"]["reject_reason"].startswith("select: bg_psnr_min")
    assert by_id["r000002"]["status"] == "ok" or by_id["r000002"]["reject_reason"].startswith("select: balance")
    assert by_id["r000003"]["status"] == "ok"  # the only style record, under quota
    assert by_id["r000005"]["status"] == "ok"  # mask-shape filters skip background replacement
    assert by_id["r000004"]["reject_stage"] == "ingest" and by_id["r000004"]["reject_reason"] == "corrupt image: truncated"
    rejected = [r for r in out if r["status"] == "rejected"]
    assert all(r["reject_reason"] and r["reject_stage"] for r in rejected)
    table = pq.read_table(tmp_path / "rejects" / "rejects.parquet")
    assert sorted(table["id"].to_pylist()) == sorted(r["id"] for r in rejected)
    assert set(table.column_names) == {"id", "stage", "reason", "edit_type"}
    funnel = metrics["funnel"]
    assert [row["filter"] for row in funnel][:3] == ["rejected upstream (ingest)", "mask_area_min", "mask_area_max"]
    assert metrics["skipped_filters"] == ["clip_image_sim_min", "clip_direction_min"]
    assert sum(row["rejected"] for row in funnel) + metrics["selected"] == metrics["records_in"] == 20
    assert funnel[-1]["remaining"] == metrics["selected"] == 12
    for row in funnel:
        assert sum(row["by_edit_type"].values()) == row["rejected"]
    assert sum(metrics["rejected_by_reason"].values()) == len(rejected)


def _flip(value, bits, rng):
    for bit in rng.choice(64, size=bits, replace=False):
        value ^= 1 << int(bit)
    return value


def test_dedupe_clusters_match_brute_force():
    rng = np.random.default_rng(6)
    base = rng.integers(0, 2**63, size=(40, 3), dtype=np.int64).astype(np.uint64)
    rows = [base[i] for i in range(40)]
    for _ in range(80):  # planted near-duplicates: 0-6 flipped bits per hash
        parent = rows[int(rng.integers(0, len(rows)))]
        rows.append(np.array([_flip(int(v), int(rng.integers(0, 7)), rng) for v in parent], dtype=np.uint64))
    h = np.array(rows, dtype=np.uint64)
    t = 4
    labels = dedupe.cluster_labels(h[:, 0], h[:, 1], h[:, 2], t)
    n = len(h)  # reference: union-find over all O(n^2) pairs
    parent = list(range(n))

    def find(x):
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for i in range(n):
        close = np.all(hamming(h[i][None, :], h[i + 1 :]) <= t, axis=1)
        for j in np.flatnonzero(close) + i + 1:
            parent[find(i)] = find(int(j))
    reference = np.array([find(i) for i in range(n)])
    same = labels[:, None] == labels[None, :]
    assert np.array_equal(same, reference[:, None] == reference[None, :])
    assert len(set(labels)) < n  # the planted duplicates did merge


def test_dedupe_keeps_best_per_cluster_in_the_stage(tmp_path):
    rng = np.random.default_rng(7)
    records = [_record(i, "add", rng) for i in range(6)]
    for k, i in enumerate([1, 2, 3]):  # 1..3 are re-encodes of 0 (a few bits off); 2 has the best background
        records[i]["phash"] = {key: _flip(v, k, rng) for key, v in records[0]["phash"].items()}
    records[2]["scores"]["bg_ssim"] = 0.99
    with pytest.warns(UserWarning, match="only 3 records pass"):
        metrics, out = _run(tmp_path, records, target_size=100)
    kept = {r["id"] for r in out if r["status"] == "ok"}
    assert kept == {"r000002", "r000004", "r000005"}
    assert metrics["dedupe_clusters_merged"] == 3
    assert all(r["reject_reason"].startswith("select: near-duplicate") for r in out if r["id"] not in kept)


def test_cli_writes_metrics_and_plots(tmp_path):
    from typer.testing import CliRunner
    import typer

    rng = np.random.default_rng(8)
    records = [_record(i, ["add", "remove"][i % 2], rng) for i in range(30)]
    source = _write(tmp_path, records)
    params = tmp_path / "params.yaml"
    params.write_text("select:\n  target_size: 10\n  seed: 3\n")
    app = typer.Typer()
    app.command()(select_stage.main)
    result = CliRunner().invoke(app, ["--params", str(params), "--input", str(source), "--out", str(tmp_path / "o"),
                                      "--rejects", str(tmp_path / "rj"), "--metrics", str(tmp_path / "m.json"),
                                      "--plots", str(tmp_path / "plots")])
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert metrics["selected"] == 10 and metrics["selected_by_edit_type"] == {"add": 5, "remove": 5}
    lines = (tmp_path / "plots" / "funnel.csv").read_text().splitlines()
    assert lines[0] == "filter,rejected,remaining,add,remove" and lines[-1].startswith("balance,20,10")
    assert (tmp_path / "plots" / "funnel.png").read_bytes()[:4] == b"\x89PNG"
