"""Write a study's results: report.json, a win/tie/loss table (markdown), a plot, and pairwise preferences (jsonl)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from annotate.study.stats import OUTCOMES


def _cell(stat: dict[str, Any]) -> str:
    if stat["rate"] is None:
        return "-"
    return f"{100 * stat['rate']:.0f}% [{100 * stat['lo']:.0f}, {100 * stat['hi']:.0f}]"


def table(stats: dict[str, Any], a_name: str, b_name: str) -> str:
    lines = [f"{a_name} (A) vs {b_name} (B): share of ratings, 95% bootstrap CI over items", "",
             "| category | items | ratings | A wins | tie | B wins |", "| --- | ---: | ---: | --- | --- | --- |"]
    rows = [*stats["by_category"].items(), ("all", stats["overall"])]
    for name, row in rows:
        lines.append(f"| {name} | {row['n_items']} | {row['n_ratings']} | "
                     + " | ".join(_cell(row[o]) for o in OUTCOMES) + " |")
    alpha = stats["krippendorff_alpha_ordinal"]
    lines += ["", f"raters: {stats['raters']}; Krippendorff's alpha (ordinal A < tie < B): "
              + ("n/a (needs two raters of one item)" if alpha is None else f"{alpha:.3f}")]
    return "\n".join(lines) + "\n"


def plot(stats: dict[str, Any], a_name: str, b_name: str, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [*stats["by_category"].items(), ("all", stats["overall"])]
    fig, ax = plt.subplots(figsize=(7, 0.5 * len(rows) + 1.4))
    colours = {"win": "#1b9e77", "tie": "#bdbdbd", "loss": "#d95f02"}
    labels = {"win": f"{a_name} wins", "tie": "tie", "loss": f"{b_name} wins"}
    for y, (_, row) in enumerate(rows):
        left = 0.0
        for name in OUTCOMES:
            rate = row[name]["rate"] or 0.0
            ax.barh(y, rate, left=left, color=colours[name], label=labels[name] if y == 0 else None)
            left += rate
        win = row["win"]
        if win["rate"] is not None:  # the CI of A's win rate, drawn at the end of its bar
            ax.errorbar(win["rate"], y, xerr=[[win["rate"] - win["lo"]], [win["hi"] - win["rate"]]], fmt="none",
                        ecolor="black", capsize=3)
    ax.set_yticks(range(len(rows)), [f"{name} (n={row['n_items']})" for name, row in rows])
    ax.set_xlim(0, 1)
    ax.set_xlabel("share of ratings")
    ax.invert_yaxis()
    ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=3, frameon=False)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def preferences(ratings: list[dict[str, Any]], items: dict[str, dict[str, Any]], a_name: str, b_name: str,
                path: Path) -> Path:
    """One line per rating: ``{"id", "source", "instruction", "A", "B", "winner", ...}`` (winner "A"/"B"/"tie")."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        for rating in ratings:
            item = items[rating["item"]]
            handle.write(json.dumps({"id": rating["item"], "source": item["source"], "instruction": item["instruction"],
                                     "A": item["A"], "B": item["B"], "winner": rating["winner"],
                                     "a_model": a_name, "b_model": b_name, "rater": rating["rater"],
                                     "category": rating["category"], "shown_left": item["left"]}) + "\n")
    return path
