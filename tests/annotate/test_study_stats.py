"""Study statistics against independent references: counts, the normal approximation, a hand-written alpha."""
from __future__ import annotations

import itertools
from collections import Counter

import numpy as np

from annotate.study import stats
from tests.support.numerics import assert_close


def _nominal_alpha(units: list[list[str]]) -> float:
    """Krippendorff's alpha, nominal, from its coincidence-matrix definition (units = values given to each item)."""
    coincidence: Counter = Counter()
    for values in units:
        m = len(values)
        if m < 2:
            continue
        for i, j in itertools.permutations(range(m), 2):
            coincidence[(values[i], values[j])] += 1.0 / (m - 1)
    n_c: Counter = Counter()
    for (c, _), weight in coincidence.items():
        n_c[c] += weight
    n = sum(n_c.values())
    observed = sum(w for (c, k), w in coincidence.items() if c != k)
    expected = sum(n_c[c] * n_c[k] for c in n_c for k in n_c if c != k) / (n - 1)
    return 1.0 - observed / expected


def _ratings(rng, items=30, raters=3, p=(0.5, 0.2, 0.3), missing=0.2):
    out = []
    for item in range(items):
        for rater in range(raters):
            if rng.random() < missing:
                continue
            winner = rng.choice(["A", "tie", "B"], p=p)
            out.append({"item": f"i{item}", "rater": f"r{rater}", "winner": str(winner),
                        "category": "add" if item % 2 else "remove"})
    return out


def test_point_rates_are_the_counts():
    ratings = _ratings(np.random.default_rng(0))
    result = stats.rates_with_ci(ratings, n_boot=200)
    counts = Counter(stats.outcome(r["winner"]) for r in ratings)
    for name in stats.OUTCOMES:
        assert_close(result[name]["rate"], counts[name] / len(ratings), accumulations=len(ratings),
                     why="a float64 mean of 0/1 outcomes vs count / n")
        assert result[name]["lo"] <= result[name]["rate"] <= result[name]["hi"]
    assert result["n_ratings"] == len(ratings)


def test_bootstrap_ci_matches_the_normal_approximation_for_independent_items():
    rng = np.random.default_rng(1)
    n = 600
    ratings = [{"item": f"i{k}", "rater": "r", "winner": str(rng.choice(["A", "tie", "B"], p=[0.3, 0.3, 0.4]))}
               for k in range(n)]
    result = stats.rates_with_ci(ratings, n_boot=4000, seed=3)
    p = result["win"]["rate"]
    half = 1.959964 * np.sqrt(p * (1 - p) / n)
    why = ("a statistical match, not rounding: the 2.5 %/97.5 % quantiles of 4000 bootstrap resamples carry a Monte "
           "Carlo error of ~0.003 at n = 600, and the normal approximation ignores the binomial's skew")
    assert_close(result["win"]["lo"], p - half, atol=0.006, why=why)
    assert_close(result["win"]["hi"], p + half, atol=0.006, why=why)


def test_clustered_ratings_widen_the_ci():
    """Three identical ratings per item carry one item's information: the CI must not shrink by sqrt(3)."""
    rng = np.random.default_rng(2)
    base = [{"item": f"i{k}", "rater": "r0", "winner": str(rng.choice(["A", "B"]))} for k in range(200)]
    tripled = [dict(r, rater=f"r{j}") for r in base for j in range(3)]
    one, three = stats.rates_with_ci(base, seed=0), stats.rates_with_ci(tripled, seed=0)
    assert_close(three["win"]["hi"] - three["win"]["lo"], one["win"]["hi"] - one["win"]["lo"], accumulations=600,
                 why="the same resampled items: float64 means over 200 vs 600 (tripled) ratings")


def test_nominal_alpha_matches_the_definition():
    rng = np.random.default_rng(4)
    ratings = _ratings(rng, items=40, raters=4, p=(0.6, 0.1, 0.3))
    units: dict[str, list[str]] = {}
    for r in ratings:
        units.setdefault(r["item"], []).append(r["winner"])
    assert_close(stats.agreement(ratings, "nominal"), _nominal_alpha(list(units.values())), accumulations=len(ratings),
                 growth="linear", why="float64 coincidence counts over 160 ratings, another formula")


def test_alpha_edge_cases_and_report():
    same = [{"item": f"i{k}", "rater": f"r{j}", "winner": "A"} for k in range(3) for j in range(2)]
    assert stats.agreement(same) == 1.0
    assert stats.agreement([{"item": "i", "rater": "r", "winner": "A"}]) is None
    perfect = [{"item": f"i{k}", "rater": f"r{j}", "winner": ["A", "tie", "B"][k % 3]} for k in range(9) for j in range(3)]
    assert_close(stats.agreement(perfect), 1.0, accumulations=len(perfect), why="1 - D_o / D_e with D_o = 0")
    summary = stats.report(_ratings(np.random.default_rng(5)), n_boot=100)
    assert set(summary["by_category"]) == {"add", "remove"} and summary["raters"] == 3
    assert stats.rates_with_ci([])["n_items"] == 0
