"""Statistics of a pairwise rating study: win/tie/loss per category with bootstrap CIs, Krippendorff's alpha.

Outcomes are from editor A's side: ``win`` (A preferred), ``tie``, ``loss`` (B preferred). Rates are per rating;
their 95% CIs come from a cluster bootstrap over ITEMS (all ratings of a resampled item come along), because the
ratings of one item by several raters are not independent. Agreement is Krippendorff's alpha (the ``krippendorff``
package) over the raters x items matrix, on the ordinal scale A-preferred < tie < B-preferred, missing ratings
allowed.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Any, Iterable

import numpy as np

OUTCOMES = ("win", "tie", "loss")
_SCALE = {"A": 0.0, "tie": 1.0, "B": 2.0}


def outcome(winner: str) -> str:
    return {"A": "win", "tie": "tie", "B": "loss"}[winner]


def rates_with_ci(ratings: list[dict[str, Any]], n_boot: int = 2000, seed: int = 0,
                  level: float = 0.95) -> dict[str, Any]:
    """``{"n_items", "n_ratings", "win": {"rate", "lo", "hi"}, ...}`` for ratings ``{"item", "winner"}``."""
    by_item: dict[str, np.ndarray] = {}
    grouped: dict[str, list[int]] = defaultdict(list)
    for rating in ratings:
        grouped[rating["item"]].append(OUTCOMES.index(outcome(rating["winner"])))
    for item, values in grouped.items():
        by_item[item] = np.bincount(values, minlength=3)  # counts of win / tie / loss for this item
    if not by_item:
        return {"n_items": 0, "n_ratings": 0, **{o: {"rate": None, "lo": None, "hi": None} for o in OUTCOMES}}
    counts = np.stack(list(by_item.values()))  # (items, 3)
    total = counts.sum(axis=0)
    point = total / total.sum()
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(counts), size=(n_boot, len(counts)))
    resampled = counts[picks].sum(axis=1)  # (n_boot, 3)
    boot = resampled / resampled.sum(axis=1, keepdims=True)
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(boot, alpha, axis=0), np.quantile(boot, 1.0 - alpha, axis=0)
    out: dict[str, Any] = {"n_items": int(len(counts)), "n_ratings": int(total.sum())}
    for i, name in enumerate(OUTCOMES):
        out[name] = {"rate": float(point[i]), "lo": float(lo[i]), "hi": float(hi[i])}
    return out


def agreement(ratings: list[dict[str, Any]], level: str = "ordinal") -> float | None:
    """Krippendorff's alpha over raters x items (None when fewer than two ratings of any item)."""
    import krippendorff

    raters = sorted({str(r["rater"]) for r in ratings})
    items = sorted({r["item"] for r in ratings})
    if len(raters) < 2 or not items:
        return None
    matrix = np.full((len(raters), len(items)), np.nan)
    rater_index = {r: i for i, r in enumerate(raters)}
    item_index = {t: j for j, t in enumerate(items)}
    for rating in ratings:
        matrix[rater_index[str(rating["rater"])], item_index[rating["item"]]] = _SCALE[rating["winner"]]
    pairable = (~np.isnan(matrix)).sum(axis=0) >= 2
    values = matrix[:, pairable]
    if values.size == 0 or len(np.unique(values[~np.isnan(values)])) < 2:
        # one value only: alpha is undefined (0/0); perfect agreement on it is reported as 1
        return 1.0 if values.size else None
    return float(krippendorff.alpha(reliability_data=values, level_of_measurement=level))


def report(ratings: Iterable[dict[str, Any]], n_boot: int = 2000, seed: int = 0) -> dict[str, Any]:
    """Per category and overall: rates with CIs; overall agreement (ordinal and nominal)."""
    ratings = list(ratings)
    categories = sorted({r.get("category") or "unknown" for r in ratings})
    per = {c: rates_with_ci([r for r in ratings if (r.get("category") or "unknown") == c], n_boot, seed)
           for c in categories}
    return {"overall": rates_with_ci(ratings, n_boot, seed), "by_category": per,
            "raters": len({str(r["rater"]) for r in ratings}),
            "krippendorff_alpha_ordinal": agreement(ratings, "ordinal"),
            "krippendorff_alpha_nominal": agreement(ratings, "nominal")}
