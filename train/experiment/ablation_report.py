"""The ablation's outputs: the Markdown table and the reward-curve plot, from the report dict of
:func:`train.experiment.ablation.run_ablation` (also written as ``table.json``)."""
from __future__ import annotations

import math
from pathlib import Path

COLUMNS = [("bg_psnr", "bg PSNR (dB) ↑", 2), ("bg_ssim", "bg SSIM ↑", 3), ("edit_reward", "edit reward ↑", 3),
           ("edit_psnr", "edit-region PSNR (dB) ↑", 2)]


def _number(value: float, digits: int) -> str:
    if value is None or math.isnan(value):
        return "n/a"
    return "∞" if math.isinf(value) else f"{value:.{digits}f}"


def _cell(pair, digits: int) -> str:
    mean, std = pair
    return f"{_number(mean, digits)} ± {_number(std, digits)}"


def markdown_table(report: dict) -> str:
    seeds = ", ".join(str(s) for s in report["seeds"])
    lines = [(f"Held-out rows: {report['heldout_rows']}; seeds: {seeds}; mean ± std over seeds. bg = the NON-edited "
              "region vs the source; edit reward = clip(masked PSNR of the edit region vs the ground truth / 40, 0, 1)."),
             "Arms are compared within their family (same objective and budget).", "",
             "| family | arm | " + " | ".join(c[1] for c in COLUMNS) + " | RL s/run |",
             "|---|---|" + "---:|" * (len(COLUMNS) + 1)]
    for name, label in (("copy_source", "reference: copy the source"),
                        ("vae_round_trip_of_ground_truth", "reference: VAE round trip of the ground truth"),
                        ("base_model", "base editor (before RL)")):
        metrics = report["base"][name]
        cells = " | ".join(_number(metrics[key], digits) for key, _, digits in COLUMNS)
        lines.append(f"| — | {label} | {cells} | |")
    for arm in report["arms"]:
        title = f"{arm['name']}: {arm['description']}" if arm["description"] else arm["name"]
        if "unavailable" in arm:
            lines.append(f"| {arm['family']} | {title} | " + " | ".join("—" for _ in COLUMNS)
                         + f" | not available: {arm['unavailable'].splitlines()[0][:120]} |")
            continue
        cells = " | ".join(_cell(arm[key], digits) for key, _, digits in COLUMNS)
        seconds = sum(arm["seconds"]) / len(arm["seconds"])
        lines.append(f"| {arm['family']} | {title} | {cells} | {seconds:.0f} |")
    total = report["total_seconds"]
    lines += ["", f"Total wall time (pretraining + every run + evaluation): {total / 60:.1f} min."]
    return "\n".join(lines) + "\n"


def mean_curve(curves_per_seed: dict, name: str) -> list[float]:
    """Step-wise mean over seeds of one reward component (over the steps every seed has)."""
    series = [c[name] for c in curves_per_seed.values() if name in c]
    if not series:
        return []
    length = min(len(s) for s in series)
    return [sum(s[i] for s in series) / len(series) for i in range(length)]


def plot_curves(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    components = [("edit_region", "edit reward (edit region vs ground truth)"),
                  ("pixel_consistency", "pixel-consistency reward (background vs source)")]
    figure, axes = plt.subplots(1, len(components), figsize=(6 * len(components), 4))
    for axis, (name, title) in zip(axes, components):
        for arm in report["arms"]:
            curve = mean_curve(arm.get("curves", {}), name)
            if curve:
                style = "-" if arm["family"].lower().startswith("nft") else "--"
                axis.plot(range(1, len(curve) + 1), curve, style, label=f"{arm['family']} {arm['name']}")
        axis.set_title(title, fontsize=10)
        axis.set_xlabel("RL step")
        axis.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    figure.suptitle("Training rewards per arm (mean over seeds)")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
