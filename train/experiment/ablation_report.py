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


def gain_in_stds(arm: dict, base: dict, metric: str = "edit_reward") -> float:
    """(arm mean − base) / arm std over seeds: how many seed standard deviations the arm moved the metric."""
    mean, std = arm[metric]
    if not (math.isfinite(mean) and math.isfinite(base[metric])):
        return float("nan")
    return (mean - base[metric]) / std if std > 0 else float("inf") if mean != base[metric] else 0.0


def markdown_table(report: dict) -> str:
    seeds = ", ".join(str(s) for s in report["seeds"])
    base = report["base"]["base_model"]
    lines = [(f"Held-out rows: {report['heldout_rows']}; seeds: {seeds}; mean ± std over seeds (each seed is its own "
              "RL run from the same base editor). bg = the NON-edited region vs the source; edit reward = "
              "clip(masked PSNR of the edit region vs the ground truth / 40, 0, 1); Δ = after RL − base editor; "
              "Δ/σ = Δ edit reward in standard deviations of the arm's seeds."),
             "Arms are compared within their family (same objective and budget).", "",
             "| family | arm | " + " | ".join(c[1] for c in COLUMNS)
             + " | Δ edit reward | Δ/σ | Δ bg PSNR (dB) | RL s/run |",
             "|---|---|" + "---:|" * (len(COLUMNS) + 4)]
    for name, label in (("copy_source", "reference: copy the source"),
                        ("vae_round_trip_of_ground_truth", "reference: VAE round trip of the ground truth"),
                        ("base_model", "base editor (before RL)")):
        metrics = report["base"][name]
        cells = " | ".join(_number(metrics[key], digits) for key, _, digits in COLUMNS)
        lines.append(f"| — | {label} | {cells} | | | | |")
    for arm in report["arms"]:
        title = f"{arm['name']}: {arm['description']}" if arm["description"] else arm["name"]
        if "unavailable" in arm:
            lines.append(f"| {arm['family']} | {title} | " + " | ".join("—" for _ in range(len(COLUMNS) + 3))
                         + f" | not available: {arm['unavailable'].splitlines()[0][:120]} |")
            continue
        cells = " | ".join(_cell(arm[key], digits) for key, _, digits in COLUMNS)
        delta_edit = (arm["edit_reward"][0] - base["edit_reward"], arm["edit_reward"][1])
        delta_bg = (arm["bg_psnr"][0] - base["bg_psnr"], arm["bg_psnr"][1])
        seconds = sum(arm["seconds"]) / len(arm["seconds"])
        lines.append(f"| {arm['family']} | {title} | {cells} | {_cell(delta_edit, 4, sign=True)} | "
                     f"{_number(gain_in_stds(arm, base), 1, sign=True)} | {_cell(delta_bg, 2, sign=True)} | "
                     f"{seconds:.0f} |")
    lines += paired_table(report)
    total = report["total_seconds"]
    lines += ["", f"Total wall time (pretraining + every run + evaluation): {total / 60:.1f} min."]
    return "\n".join(lines) + "\n"


def paired_differences(arm: dict, reference: dict, metric: str) -> tuple[float, float, int]:
    """Mean and std over the seeds both arms ran of (arm − reference): same seed = same prompts and noise."""
    seeds = [s for s in arm["per_seed"] if s in reference["per_seed"]]
    values = [arm["per_seed"][s][metric] - reference["per_seed"][s][metric] for s in seeds]
    values = [v for v in values if math.isfinite(v)]
    if not values:
        return float("nan"), float("nan"), 0
    mean = sum(values) / len(values)
    std = (sum((v - mean) ** 2 for v in values) / (len(values) - 1)) ** 0.5 if len(values) > 1 else 0.0
    return mean, std, len(values)


def paired_table(report: dict) -> list[str]:
    """What each technique changes against the arm it is added to, seed by seed."""
    arms = {arm["name"]: arm for arm in report["arms"] if "unavailable" not in arm}
    rows = [(arm, arms[arm["compare_to"]]) for arm in arms.values() if arm.get("compare_to") in arms]
    if not rows:
        return []
    lines = ["", "What each technique changes, paired by seed (arm − the arm it adds to, mean ± std of the per-seed "
             "differences; the same seed means the same prompts and noise):", "",
             "| family | arm | compared with | Δ edit reward | Δ bg PSNR (dB) | Δ bg SSIM | seeds |",
             "|---|---|---|---:|---:|---:|---:|"]
    for arm, reference in rows:
        cells = []
        for metric, digits in (("edit_reward", 4), ("bg_psnr", 2), ("bg_ssim", 3)):
            mean, std, count = paired_differences(arm, reference, metric)
            cells.append(_cell((mean, std), digits, sign=True))
        lines.append(f"| {arm['family']} | {arm['name']} | {reference['name']} | " + " | ".join(cells)
                     + f" | {count} |")
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
    """Held-out edit reward and background PSNR against the RL step, mean ± std band over seeds, per arm."""
    plt = _pyplot()
    base = report["base"]["base_model"]
    panels = [("edit_reward", "held-out edit reward ↑"), ("bg_psnr", "held-out background PSNR (dB) ↑")]
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
    figure.suptitle("Held-out evaluation during RL (fixed rows and noise; mean ± std over seeds)")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


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
