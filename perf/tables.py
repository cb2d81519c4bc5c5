"""The manual's performance tables, generated from ``perf/results/*.json`` (never typed by hand).

    .venv/bin/python -m perf.tables --write     # rewrite every generated table in docs/ from its JSON
    .venv/bin/python -m perf.tables --check     # exit 1 when a table differs from what its JSON gives

A generated table sits between two HTML comments in a page::

    <!-- perf-table NAME (generated from perf/results/...json by perf/tables.py; do not edit) -->
    ...
    <!-- /perf-table -->

``NAME`` picks a renderer in ``TABLES``. Each block starts with the run's provenance (hardware, date, commit, load
average) from the JSON's ``provenance`` object. tests/perf/test_perf_tables.py fails when a block and its JSON
differ, so a re-run script's numbers reach the manual only through ``--write``.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "perf" / "results"
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"(<!-- perf-table (?P<name>[\w-]+) [^\n]*-->\n)(?P<body>.*?)(<!-- /perf-table -->)", re.S)


def load(name: str) -> dict[str, Any]:
    return json.loads((RESULTS / f"{name}.json").read_text())


def provenance_line(*results: dict[str, Any]) -> str:
    """``Measured on <hardware>; <date>, commit <c>; 1-min load average a → b.`` for one or more runs."""
    if not all(result.get("provenance") for result in results):
        machines = sorted({str(r.get("machine") or r.get("hardware") or "unrecorded hardware") for r in results})
        return f"Measured on {'; '.join(machines)} (the result records no date, commit or load)."
    parts = []
    for result in results:
        p = result.get("provenance") or {}
        load = p.get("load_average_1m")
        busy = ""
        if load:
            cores = p.get("cores") or 2
            # a run of 2-thread measurements holds a 2-core load near 2 by itself: only more than that is others'
            shared = max(load) > cores + 0.5
            busy = f"; 1-min load average {load[0]:.1f} → {load[1]:.1f}" + \
                (" (other jobs shared the cores)" if shared else " (quiet)")
        elif p.get("conditions"):
            busy = f"; {p['conditions']}"
        parts.append(f"{p.get('date', '?')}, commit `{p.get('commit', '?')}`{busy}")
    hardware = {(r.get("provenance") or {}).get("hardware", "unknown hardware") for r in results}
    return f"Measured on {'; '.join(sorted(hardware))}: " + "; ".join(dict.fromkeys(parts)) + "."


def table(header: list[str], align: str, rows: list[list[Any]]) -> str:
    marks = {"l": "---", "r": "---:", "c": ":---:"}
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(marks[a] for a in align) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _met(ok: bool) -> str:
    return "met" if ok else "**not met**"


# ---------------------------------------------------------------------------------------------------- renderers
def select_1m() -> str:
    r = load("select_1m")
    return provenance_line(r) + "\n\n" + table(
        ["records", "select wall", "select CPU (user + sys)", "peak RSS", "selected", "near-duplicates removed",
         "goal"], "rrrrrrl",
        [[f"{r['records']:,}", f"{r['select_wall_s']:.1f} s",
          f"{r['select_cpu_s']:.1f} s" if r.get("select_cpu_s") is not None else "not recorded",
          f"{r['peak_rss_mb']:,} MB", f"{r['selected']:,}",
          f"{r['near_duplicates']:,}", f"≤ 60 s, ≤ 2 GB: {_met(r['meets_goal'])}"]])


def masks_score() -> str:
    r = load("masks_score")
    rows = []
    for size in r["sizes"]:
        s = r["by_size"][str(size)]
        rows.append([f"{size} px", f"{s['records']:,}", f"{s['naive_median_s']:.2f} s",
                     f"{s['ours_median_s']:.2f} s", f"**{s['speedup']:.2f}×**",
                     f"≥ {s['goal']:g}×: {_met(s['speedup'] >= s['goal'])}",
                     f"{s['mask_iou_vs_naive_min']:.4f}",
                     f"{s['score_max_abs_diff_by_name'].get('bg_psnr', 0):.1e} dB",
                     f"{s['score_max_abs_diff_by_name'].get('bg_ssim', 0):.1e}"])
    text = table(["size", "records", "naive loop (median)", "masks + score (median)", "speed-up", "goal",
                  "min mask IoU vs naive", "max Δ bg PSNR", "max Δ bg SSIM"], "lrrrrlrrr", rows)
    rss = r.get("rss")
    if rss:
        text += "\n\n" + table(
            ["records (128 px, fresh process)", "masks + score", "peak RSS", "goal"], "rrrl",
            [[f"{rss['small']['records']:,}", f"{rss['small']['records_per_s']:.1f} rec/s",
              f"{rss['small']['peak_rss_mb']:.0f} MB", ""],
             [f"{rss['large']['records']:,}", f"{rss['large']['records_per_s']:.1f} rec/s",
              f"{rss['large']['peak_rss_mb']:.0f} MB",
              f"RSS ≤ 1.2× the smaller run: {rss['ratio']:.2f}×, {_met(rss['ratio'] <= 1.2)}"]])
    return provenance_line(r) + f" {r['rounds']} interleaved rounds, medians.\n\n" + text


def ingest_stream() -> str:
    r = load("ingest_stream")
    runs = r.get("runs") or {k: v for k, v in r.items() if re.match(r"(preset|hf)_\d+$", k)}
    keys = sorted((k for k in runs if re.match(r"(preset|hf)_\d+$", k)),
                  key=lambda k: (int(k.split("_")[1]), not k.startswith("preset")))
    rows = []
    for key in keys:
        run, n = runs[key], int(key.split("_")[1])
        cpu = run.get("rows_per_cpu_s")
        rows.append(["preset" if key.startswith("preset") else "`hf`", f"{n:,}", f"{run['rows_per_s']:,.0f}",
                     "not recorded" if cpu is None else f"{cpu:,.0f}", f"{run['peak_rss_mb']:.0f} MB",
                     f"{run['shards_mb']:.1f} MB", f"{run['cache_mb']:.0f} MB"])
    return provenance_line(r) + "\n\n" + table(
        ["reader", "rows", "rows/s", "rows per CPU s", "peak RSS", "our shards", "HF cache"], "lrrrrrr", rows)


def grounded_masks() -> str:
    r = load("grounded_masks")
    h, w = r["image_size"]
    head = f"seconds ({r['images']} images {h}×{w})"
    rows = [[row["path"], row["batch_size"], f"{row['seconds']:.3f}", f"{row['images_per_s']:.2f}",
             f"{row['speedup']:.2f}×"] for row in r["rows"]]
    return provenance_line(r) + f" Models: {r['models']}, {r['device']}, {r['dtype']}.\n\n" + \
        table(["path", "batch", head, "images/s", "speedup"], "lrrrr", rows)


def mllm_client() -> str:
    r = load("mllm_client")
    rows = [[x["workers"], x["req_per_s_no_cache"], x["speedup_vs_sequential"], x["req_per_s_cold_cache"],
             x["cache_write_ms_per_req"], x["cache_hit_ms_per_req"], x["server_max_in_flight"]] for x in r["rows"]]
    return provenance_line(r) + "\n\n" + table(
        ["workers", "req/s (no cache)", "speedup vs sequential", "req/s (cold cache)", "cache write ms/req",
         "cache hit ms/req", "server max in flight"], "rrrrrrr", rows)


def rle_codec() -> str:
    r = load("rle_codec")
    rows = []
    for x in r["rows"]:
        rows.append([x["mask"], f"{x['runs']:,}", f"{x['rle_bytes']:,}", f"{x['sdk_encode_ms']:.1f}",
                     f"{x['ours_encode_ms']:.2f}", f"**{x['encode_speedup']:.1f}×**",
                     f"{x['sdk_decode_ms']:.1f}", f"{x['ours_decode_ms']:.2f}", f"**{x['decode_speedup']:.1f}×**"])
    text = table(["mask", "runs", "bytes", "SDK encode ms", "ours encode ms", "encode ×", "SDK decode ms",
                  "ours decode ms", "decode ×"], "lrrrrrrrr", rows)
    noisy = next(x for x in r["rows"] if x["mask"] == "noisy")
    goal = r["goal_speedup"]
    how = f"{r.get('rounds', r.get('repeats'))} interleaved rounds, medians" if r.get("rounds") else \
        f"best of {r['repeats']}"
    text += (f"\n\nGoal ≥ {goal:g}× the SDK on the noisy mask: encode {noisy['encode_speedup']:.1f}×, decode "
             f"{noisy['decode_speedup']:.1f}×: "
             f"{_met(noisy['encode_speedup'] >= goal and noisy['decode_speedup'] >= goal)} ({r['size']}×{r['size']} "
             f"masks, {how}).")
    other = r.get("other_baselines")
    if other:
        text += "\n\n" + table(["baseline (noisy mask, encode)", "ms", "ours ×"], "lrr",
                               [[b["name"], f"{b['ms']:.2f}", f"{b['ms'] / noisy['ours_encode_ms']:.1f}×"]
                                for b in other])
    return provenance_line(r) + "\n\n" + text


def bench_eval() -> str:
    r = load("bench_eval")
    rows = [[k, v] for k, v in r["rows"].items() if not k.startswith("1-min load")]
    return provenance_line(r) + "\n\n" + table(["measure", "result"], "ll", rows)


def train_overhead() -> str:
    runs = [load("train_overhead_grpo"), load("train_overhead_nft")]
    rows = [[x["objective"], f"{x['trainer_step_s']:.3f}", f"{x['raw_step_s']:.3f}", f"{100 * x['overhead']:+.1f} %",
             f"{x['trainer_step_median_s']:.2f} / {x['raw_step_median_s']:.2f}"] for x in runs]
    return provenance_line(*runs) + "\n\n" + table(
        ["objective", "trainer step (s)", "raw fwd/bwd (s)", "overhead", "medians trainer / raw (s)"], "lrrrr", rows)


def _transformer(result: dict[str, Any]) -> str:
    """"2 heads x 16" from a trainer result's model description."""
    return result["model"].split("(")[1].split(")")[0].split(", ")[1]


def peer_step() -> str:
    names = ("peer_step", "peer_step_compile", "peer_step_heads4", "peer_step_heads4_compile")
    runs = [load(name) for name in names if (RESULTS / f"{name}.json").exists()]
    rows = []
    for r in runs:
        p = r.get("peer") or {}
        size = _transformer(r)
        peer = [f"{p['median_s']:.2f}", f"**{p['speedup_vs_peer']:.2f}×** / {p['paired_speedup_median']:.2f}×",
                f"{p['cpu_speedup_vs_peer']:.2f}×", f"{p['lora_grad_max_rel_diff']:.1e} (≤ {p['grad_tolerance']:.0e})"] \
            if p else ["—"] * 4
        rows.append([size, "compiled" if r.get("compile") else "eager", r["rounds"], f"{r['reuse_median_s']:.2f}",
                     f"{r['recompute_median_s']:.2f}", *peer, f"{r['speedup']:.2f}×"])
    return provenance_line(*runs) + "\n\n" + table(
        ["transformer", "ours (`train.compile`)", "rounds", "ours, reuse (s)", "ours, recompute (s)", "flow_grpo (s)",
         "flow_grpo / ours: medians / per-round", "same, CPU seconds", "LoRA grads max rel diff",
         "recompute / reuse"], "llrrrrrrrr", rows)


def nft_step() -> str:
    runs = [load(name) for name in ("nft_step", "nft_step_heads4") if (RESULTS / f"{name}.json").exists()]
    rows = [[_transformer(r), r["rounds"], f"{r['unfused_median_s']:.2f}",
             f"{r['fused_median_s']:.2f}", f"**{r['speedup']:.2f}×** / {r['paired_speedup_median']:.2f}×",
             f"{r['cpu_speedup']:.2f}×", "yes" if r["losses_equal"] and r["first_update_grads_equal"] else "**no**"]
            for r in runs]
    return provenance_line(*runs) + "\n\n" + table(
        ["transformer", "rounds", "unfused (s)", "fused (s)", "unfused / fused: medians / per-round",
         "same, CPU seconds", "losses and gradients bit-identical"], "lrrrrrl", rows)


def reward_overlap() -> str:
    r = load("reward_overlap")
    names = {"sequential": "sequential (`rewards.overlap=false`)", "overlapped": "overlapped (default)"}
    rows = [[names.get(x["mode"], x["mode"]), f"{x['step_s']:.3f}", f"{x['sample_s']:.3f}", f"{x['score_s']:.3f}",
             f"{x['step_median_s']:.3f}"] for x in r["rows"]]
    return provenance_line(r) + "\n\n" + table(
        ["mode", "step (s)", "rollout (s)", "scoring wait (s)", "median step (s)"], "lrrrr", rows) + \
        f"\n\nOverlapped / sequential: **{r['speedup']:.2f}×** per step."


def attention_overhead() -> str:
    r = load("attention_overhead")
    rows = [[x["mode"], f"{x['best_s']:.3f}", "" if x["mode"] == "plain" else f"{100 * x['overhead']:+.1f} %"]
            for x in r["rows"]]
    return provenance_line(r) + "\n\n" + table(["mode", "rollout (s)", "vs plain"], "lrr", rows)


def ray_executor() -> str:
    r = load("ray_executor")

    def seconds(value: float, unit: str = "s", scale: float = 1.0) -> str:
        return "not measured" if value is None or value != value else f"{scale * value:.{0 if unit == 'ms' else 1}f} {unit}"

    rows = [[f"{r['records']:,} ({r['shards']} × {-(-r['records'] // r['shards']):,})",
             f"{r['local_s']:.1f}", f"{r['ray_s']:.1f}", f"**{r['ray_overhead_pct']:+.1f} %**",
             seconds(r["ray_startup_s"]), seconds(r["actor_pool_startup_s"]),
             seconds(r["per_shard_overhead_s"], "ms", 1000), "yes" if r["outputs_identical"] else "**no**"]]
    how = f"{r['rounds']} interleaved round(s), medians; " if r.get("rounds") else ""
    actors = f"{r.get('actors', 2)} actors × {r['actor_num_cpus']:g} CPU" if r.get("actor_num_cpus") else \
        f"{r.get('actors', 2)} actors"
    return provenance_line(r) + f" {how}{r['size']} px pairs.\n\n" + table(
        ["records (shards × records)", "local s", f"Ray s ({actors})", "Ray over local", "`ray.init` (not included)",
         "actor-pool start-up", "per shard", "outputs identical"], "lrrrrrrc", rows)


def rrm_sampling() -> str:
    r = load("rrm_sampling")
    rows = [[x["mode"], f"{x['seconds']:.2f}", f"{x['tokens_per_s']:.0f}"] for x in r["rows"]]
    return provenance_line(r) + f" Model: {r['model']}, {r['hardware']}.\n\n" + \
        table(["mode", "seconds", "tokens/s"], "lrr", rows) + \
        f"\n\nBatching gives **{r['speedup']:.1f}×** the tokens/s of one-at-a-time sampling (goal: ≥ 4×)."


def metric_conventions() -> str:
    r = load("metric_conventions")
    rows = [[x["image"], x["degradation"], f"{x['psnr_standard']:.2f}", f"{x['psnr_cocoedit']:.2f}",
             f"{x['ssim_standard']:.3f}", f"{x['ssim_cocoedit']:.3f}"] for x in r["rows"]]
    return provenance_line(r) + "\n\n" + table(
        ["image", "degradation", "PSNR ours", "PSNR CoCoEdit", "SSIM ours", "SSIM CoCoEdit"], "llrrrr", rows)


TABLES: dict[str, Callable[[], str]] = {f.__name__.replace("_", "-"): f for f in (
    select_1m, masks_score, ingest_stream, grounded_masks, mllm_client, rle_codec, bench_eval, train_overhead,
    peer_step, nft_step, reward_overlap, attention_overhead, ray_executor, rrm_sampling, metric_conventions)}


# ---------------------------------------------------------------------------------------------------- blocks
def render(text: str) -> str:
    """``text`` with every generated block replaced by its renderer's output."""
    def replace(match: re.Match) -> str:
        name = match.group("name")
        if name not in TABLES:
            raise KeyError(f"unknown perf table {name!r} (known: {', '.join(sorted(TABLES))})")
        return f"{match.group(1)}\n{TABLES[name]()}\n\n{match.group(4)}"

    return BLOCK.sub(replace, text)


def blocks(text: str) -> list[str]:
    return [m.group("name") for m in BLOCK.finditer(text)]


def stale(paths: list[Path] | None = None) -> dict[Path, str]:
    """{page: its text with the tables regenerated} for each page whose generated tables are out of date."""
    out = {}
    for path in paths or DOCS:
        text = path.read_text(encoding="utf-8")
        new = render(text)
        if new != text:
            out[path] = new
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--write", action="store_true", help="rewrite the generated tables in docs/ from the JSON")
    mode.add_argument("--check", action="store_true", help="exit 1 when a generated table is out of date")
    args = parser.parse_args(argv)
    changed = stale()
    for path, text in changed.items():
        if args.write:
            path.write_text(text, encoding="utf-8")
        print(f"{'rewrote' if args.write else 'out of date:'} {path.relative_to(ROOT)}")
    return 1 if changed and args.check else 0


if __name__ == "__main__":
    sys.exit(main())

