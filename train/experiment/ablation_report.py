"""The ablation's outputs: the Markdown table, the held-out curves and the Pareto plot, from the report dict of
:func:`train.experiment.ablation.run_ablation` (also written as ``table.json``).

Every number is a held-out evaluation (same rows, same noise) of the model after RL; ``Δ`` is against the base
editor, which every arm starts from. The per-seed values are in ``table.json``.
"""
from __future__ import annotations

import math
from pathlib import Path

COLUMNS = [("bg_psnr", "bg PSNR (dB) ↑", 2), ("bg_ssim", "bg SSIM ↑", 3), ("edit_reward", "edit reward ↑", 4),
           ("edit_psnr", "edit-region PSNR (dB) ↑", 2)]


def _number(value: float | None, digits: int, sign: bool = False) -> str:
    if value is None or math.isnan(value):
        return "n/a"
    if math.isinf(value):
        return "∞" if value > 0 else "−∞"
    return f"{value:+.{digits}f}" if sign else f"{value:.{digits}f}"


def _cell(pair, digits: int, sign: bool = False) -> str:
    mean, std = pair
    return f"{_number(mean, digits, sign)} ± {_number(std, digits)}"


def seed_stats(values: list[float]) -> dict[str, float]:
    """Mean, std, standard error and the two-sided 95% t interval of per-seed values (paired differences), with
    ``z`` = mean / standard error (how many standard errors the mean is from 0)."""
    from scipy import stats

    values = [v for v in values if math.isfinite(v)]
    n = len(values)
    if n == 0:
        return {"n": 0, "mean": float("nan"), "std": float("nan"), "se": float("nan"), "lo": float("nan"),
                "hi": float("nan"), "z": float("nan")}
    mean = sum(values) / n
    std = (sum((v - mean) ** 2 for v in values) / (n - 1)) ** 0.5 if n > 1 else float("nan")
    se = std / n ** 0.5
    half = float(stats.t.ppf(0.975, n - 1)) * se if n > 1 else float("nan")
    z = mean / se if se > 0 else float("nan")
    return {"n": n, "mean": mean, "std": std, "se": se, "lo": mean - half, "hi": mean + half, "z": z}


def detectable_effect(std: float, n: int, power: float = 0.8, alpha: float = 0.05) -> float:
    """The smallest true mean difference a two-sided paired t-test over ``n`` seeds (per-seed std ``std``) detects
    at level ``alpha`` with probability ``power``: (t_{1−α/2} + t_{power}) · std / √n, n − 1 degrees of freedom."""
    from scipy import stats

    if n < 2 or not math.isfinite(std):
        return float("nan")
    return (float(stats.t.ppf(1 - alpha / 2, n - 1)) + float(stats.t.ppf(power, n - 1))) * std / n ** 0.5


def deltas_vs_base(arm: dict, base: dict, metric: str) -> list[float]:
    """Per seed: the arm's test value − the base editor's (one fixed base editor: every seed starts from it)."""
    return [run[metric] - base[metric] for run in arm["per_seed"].values()]


def _interval(st: dict, digits: int) -> str:
    if st["n"] == 0:
        return "n/a"
    return (f"{_number(st['mean'], digits, sign=True)} [{_number(st['lo'], digits, sign=True)}, "
            f"{_number(st['hi'], digits, sign=True)}] ({_number(st['z'], 1, sign=True)})")


DELTAS = [("edit_reward", "Δ edit reward", 4), ("bg_psnr", "Δ bg PSNR (dB)", 2), ("bg_ssim", "Δ bg SSIM", 3)]


def markdown_table(report: dict) -> str:
    seeds = ", ".join(str(s) for s in report["seeds"])
    base = report["base"]["base_model"]
    hw = report.get("hardware", {})
    split = report.get("table_rows", "test").capitalize()
    lines = [(f"{split} rows: {report['heldout_rows']} (read once, after each run; settings were chosen on "
              f"{report.get('validation_rows', 0)} validation rows); seeds: {seeds}; every run starts from the same "
              f"base editor ({report.get('base_editor', '')}). bg = the NON-edited region vs the source; edit reward "
              "= clip(masked PSNR of the edit region vs the ground truth / 40, 0, 1). Δ = after RL − base editor, "
              "per seed; shown as mean [95% t interval over seeds] (mean / standard error)."),
             "Arms are compared within their family (same objective and budget).", "",
             "| family | arm | " + " | ".join(c[1] for c in COLUMNS) + " | "
             + " | ".join(d[1] for d in DELTAS) + " | RL s/run |",
             "|---|---|" + "---:|" * (len(COLUMNS) + len(DELTAS) + 1)]
    for name, label in (("copy_source", "reference: copy the source"),
                        ("vae_round_trip_of_ground_truth", "reference: VAE round trip of the ground truth"),
                        ("base_model", "base editor (before RL)")):
        metrics = report["base"][name]
        cells = " | ".join(_number(metrics[key], digits) for key, _, digits in COLUMNS)
        lines.append(f"| — | {label} | {cells} |" + " |" * (len(DELTAS) + 1))
    for arm in report["arms"]:
        title = f"{arm['name']}: {arm['description']}" if arm["description"] else arm["name"]
        if "unavailable" in arm:
            lines.append(f"| {arm['family']} | {title} | "
                         + " | ".join("—" for _ in range(len(COLUMNS) + len(DELTAS)))
                         + f" | not available: {arm['unavailable'].splitlines()[0][:120]} |")
            continue
        cells = " | ".join(_cell(arm[key], digits) for key, _, digits in COLUMNS)
        deltas = " | ".join(_interval(seed_stats(deltas_vs_base(arm, base, key)), digits) for key, _, digits in DELTAS)
        seconds = sum(arm["seconds"]) / len(arm["seconds"])
        lines.append(f"| {arm['family']} | {title} | {cells} | {deltas} | {seconds:.0f} |")
    lines += paired_table(report)
    lines += ratio_table(report)
    total = report["total_seconds"]
    load = report.get("load_average_1_5_15_min", {})
    lines += ["", f"Total wall time (every run + evaluation; the base editor is shipped): {total / 60:.1f} min"
              + (f" on {hw.get('cpu')} ({hw.get('cores')} cores), torch {hw.get('torch')}, CPU capability "
                 f"{hw.get('cpu_capability')} (ATEN_CPU_CAPABILITY={hw.get('ATEN_CPU_CAPABILITY') or 'unset'}), "
                 f"{hw.get('threads')} thread(s) per run" if hw else "")
              + (f", {report['workers']} run(s) at once" if "workers" in report else "")
              + (f"; load average (1/5/15 min) {_load(load.get('before_runs'))} before the runs, "
                 f"{_load(load.get('at_write'))} at the end" if load else "") + "."]
    return "\n".join(lines) + "\n"


def _load(values) -> str:
    return "/".join(f"{v:.2f}" for v in values) if values else "n/a"


def ratio_table(report: dict) -> list[str]:
    """For the arms whose objective logs a policy ratio (GRPO): its mean, its largest departure from 1 and the clip
    fraction over every update of every step and seed, and the gradient norm."""
    rows = []
    for arm in report["arms"]:
        logged = [s for s in arm.get("optimizer", {}).values() if s.get("ratio")]
        if not logged:
            continue
        ratios = [v for s in logged for v in s["ratio"]]
        clips = [v for s in logged for v in s["clip_fraction"]]
        norms = [v for s in logged for v in s.get("grad_norm", [])]
        rows.append(f"| {arm['family']} | {arm['name']} | {sum(ratios) / len(ratios):.6f} | "
                    f"{max(abs(v - 1) for v in ratios):.2e} | {sum(clips) / len(clips):.4f} | {max(clips):.4f} | "
                    + (f"{sum(norms) / len(norms):.2e} |" if norms else "n/a |"))
    if not rows:
        return []
    return ["", "The policy ratio, per RL step (mean over that step's updates), over every step and seed:", "",
            "| family | arm | mean ratio | largest abs(ratio − 1) | mean clip fraction | largest clip fraction "
            "| mean gradient norm |", "|---|---|---:|---:|---:|---:|---:|", *rows]


def paired_differences(arm: dict, reference: dict, metric: str) -> list[float]:
    """Per seed both arms ran: arm − reference (same seed = same prompts and noise)."""
    seeds = [s for s in arm["per_seed"] if s in reference["per_seed"]]
    return [arm["per_seed"][s][metric] - reference["per_seed"][s][metric] for s in seeds]


def paired_table(report: dict) -> list[str]:
    """What each technique changes against the arm it is added to, seed by seed."""
    arms = {arm["name"]: arm for arm in report["arms"] if "unavailable" not in arm}
    rows = [(arm, arms[arm["compare_to"]]) for arm in arms.values() if arm.get("compare_to") in arms]
    if not rows:
        return []
    lines = ["", "What each technique changes, paired by seed (arm − the arm it adds to; mean [95% t interval] "
             "(mean / standard error); the same seed means the same prompts and noise):", "",
             "| family | arm | compared with | " + " | ".join(d[1] for d in DELTAS) + " | seeds |",
             "|---|---|---|" + "---:|" * (len(DELTAS) + 1)]
    for arm, reference in rows:
        stats = [seed_stats(paired_differences(arm, reference, key)) for key, _, _ in DELTAS]
        cells = " | ".join(_interval(st, digits) for st, (_, _, digits) in zip(stats, DELTAS))
        lines.append(f"| {arm['family']} | {arm['name']} | {reference['name']} | {cells} | {stats[0]['n']} |")
    return lines


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _style(arm: dict, index: int) -> dict:
    import matplotlib

    colours = matplotlib.colormaps["tab10"]
    grpo = arm["family"].lower().startswith("grpo")
    return {"color": colours(index % 10), "linestyle": "--" if grpo else "-", "marker": "s" if grpo else "o"}


def heldout_series(arm: dict, metric: str, base_value: float) -> tuple[list[int], list[float], list[float]]:
    """Steps, mean and std over seeds of one held-out metric, with the base editor as step 0."""
    runs = [c["heldout"] for c in arm.get("curves", {}).values() if c.get("heldout")]
    if not runs:
        return [], [], []
    length = min(len(r["step"]) for r in runs)
    steps = [0] + runs[0]["step"][:length]
    means, stds = [base_value], [0.0]
    for i in range(length):
        values = [r[metric][i] for r in runs if math.isfinite(r[metric][i])]
        mean = sum(values) / len(values) if values else float("nan")
        var = sum((v - mean) ** 2 for v in values) / (len(values) - 1) if len(values) > 1 else 0.0
        means.append(mean)
        stds.append(var ** 0.5)
    return steps, means, stds


def plot_curves(report: dict, path: Path) -> None:
    """Validation edit reward and background PSNR against the RL step, mean ± std band over seeds, per arm (step 0:
    the base editor on the validation rows)."""
    plt = _pyplot()
    base = report["base"].get("validation", report["base"]["base_model"])
    panels = [("edit_reward", "validation edit reward ↑"), ("bg_psnr", "validation background PSNR (dB) ↑")]
    figure, axes = plt.subplots(1, 2, figsize=(13, 4.8))
    for axis, (metric, title) in zip(axes, panels):
        for index, arm in enumerate(report["arms"]):
            steps, means, stds = heldout_series(arm, metric, base[metric])
            if not steps:
                continue
            style = _style(arm, index)
            axis.plot(steps, means, linestyle=style["linestyle"], marker=style["marker"], markersize=3,
                      color=style["color"], label=f"{arm['family']} {arm['name']}")
            axis.fill_between(steps, [m - s for m, s in zip(means, stds)], [m + s for m, s in zip(means, stds)],
                              color=style["color"], alpha=0.12)
        axis.axhline(base[metric], color="black", linewidth=0.8, linestyle=":", label="base editor")
        axis.set_title(title, fontsize=10)
        axis.set_xlabel("RL step")
        axis.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    figure.suptitle("Validation rows during RL (fixed rows and noise; mean ± std over seeds)")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def pareto_front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The points no other point beats on both coordinates (higher is better on each), by the first coordinate."""
    finite = [p for p in points if all(math.isfinite(v) for v in p)]
    return sorted(p for p in finite if not any(q[0] >= p[0] and q[1] >= p[1] and q != p for q in finite))


def plot_pareto(report: dict, path: Path) -> None:
    """Background PSNR against edit reward after RL: one small marker per arm and seed, a large one per arm mean,
    and the base editor; up and to the right is better on both."""
    plt = _pyplot()
    base = report["base"]["base_model"]
    figure, axis = plt.subplots(figsize=(8.5, 6))
    for index, arm in enumerate(report["arms"]):
        if "unavailable" in arm:
            continue
        style = _style(arm, index)
        seeds = list(arm["per_seed"].values())
        axis.scatter([s["edit_reward"] for s in seeds], [s["bg_psnr"] for s in seeds], s=18, alpha=0.55,
                     color=style["color"], marker=style["marker"])
        axis.errorbar(arm["edit_reward"][0], arm["bg_psnr"][0], xerr=arm["edit_reward"][1], yerr=arm["bg_psnr"][1],
                      color=style["color"], marker=style["marker"], markersize=8, capsize=3,
                      label=f"{arm['family']} {arm['name']}")
    means = [(arm["edit_reward"][0], arm["bg_psnr"][0]) for arm in report["arms"] if "unavailable" not in arm]
    front = pareto_front(means + [(base["edit_reward"], base["bg_psnr"])])
    if len(front) > 1:
        axis.plot([p[0] for p in front], [p[1] for p in front], color="grey", linewidth=1, linestyle="-.",
                  label="Pareto front of the arm means", zorder=1)
    axis.scatter([base["edit_reward"]], [base["bg_psnr"]], s=120, color="black", marker="*", label="base editor",
                 zorder=5)
    axis.set_xlabel("held-out edit reward ↑ (edit region vs ground truth)")
    axis.set_ylabel("held-out background PSNR (dB) ↑ (non-edited region vs source)")
    axis.set_title("After RL: per seed (small) and mean ± std over seeds (large)", fontsize=10)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=7, loc="best")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
