"""Several reviewers of one task: agreement between them and the policy that turns their reviews into one.

Pull keeps every submitted annotation with its author (``reviewer``) and times; nothing replaces anything. Per sample,
each reviewer's latest annotation counts (a reviewer who updates their annotation changes their own vote only).

Two reviews **agree** when their verdicts agree and their masks overlap: the verdict of a review is what it means for
the record (``mask`` for an accepted or corrected mask, ``empty``, ``reject``; see :mod:`annotate.merge`), and two
``mask`` verdicts agree when IoU(mask a, mask b) >= ``min_iou`` (an accepted mask is the prediction).

The policy (``annotate.review.resolve``):

* ``latest``     the review saved last decides (disagreements are counted, not held back);
* ``lead``       the lead reviewer's review decides when there is one, else the latest;
* ``consensus``  the latest review of a strict majority of reviewers who agree with each other, else a conflict;
* ``adjudicate`` (default) reviewers who all agree: the latest; otherwise a conflict, until the lead reviewer submits
  (or updates) a review after every other reviewer's, which decides.

A conflict leaves the record as it was (its mask unreviewed), with ``review_status="conflict"`` and the flag
``review_conflict``: it is not exported as reviewed until resolved.
"""
from __future__ import annotations

import itertools
from collections import defaultdict
from dataclasses import dataclass
from typing import Annotated, Any, Iterable, Literal

import numpy as np

from editkit import rle
from editkit.config_meta import Range

POLICIES = ("latest", "lead", "consensus", "adjudicate")


@dataclass
class ReviewPolicy:
    resolve: Literal["latest", "lead", "consensus", "adjudicate"] = "adjudicate"
    """how the reviews of several reviewers of one task become one: latest (saved last), lead (the lead reviewer's),
    consensus (a majority that agrees), adjudicate (agreeing reviewers, else the task waits in the adjudication queue
    for the lead)"""
    lead: str = "reviewer@editkit.local"
    """the lead reviewer's Label Studio login (email), who adjudicates conflicts; the default is the login `annotate
    serve` creates"""
    min_iou: Annotated[float, Range(ge=0.0, le=1.0)] = 0.9
    """two reviewers' masks agree when their IoU is at least this"""


def reviewer_of(review: dict[str, Any]) -> str:
    """Who made a review (older reviews files have no author: one anonymous reviewer)."""
    return str(review.get("reviewer") or "unknown")


def _key(review: dict[str, Any]) -> tuple[str, int]:
    return (review.get("updated_at") or "", review.get("annotation_id") or 0)


def latest(reviews: Iterable[dict[str, Any]]) -> dict[str, Any] | None:
    return max(reviews, key=_key, default=None)


def per_reviewer(reviews: Iterable[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """reviewer -> their latest review (of one sample)."""
    out: dict[str, dict[str, Any]] = {}
    for review in reviews:
        who = reviewer_of(review)
        if who not in out or _key(review) > _key(out[who]):
            out[who] = review
    return out


def by_sample(reviews: Iterable[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for review in reviews:
        out[review["sample_id"]].append(review)
    return dict(out)


def outcome(review: dict[str, Any], predicted: np.ndarray | None) -> tuple[str, np.ndarray | None]:
    """(verdict, mask) of one review against the prediction: ``mask``/``empty``/``reject``/``invalid``."""
    choice = review.get("choice")
    if choice == "reject":
        return "reject", None
    if review.get("invalid") or choice not in (None, "accept", "fixed", "empty"):
        return "invalid", None
    painted = rle.decode(review["mask"]) if review.get("mask") is not None else None
    if predicted is not None and painted is not None and painted.shape != predicted.shape:
        return "invalid", None
    changed = painted is not None and (predicted is None or not np.array_equal(painted, predicted))
    if choice == "empty":
        return ("invalid", None) if changed and painted.any() else ("empty", None)
    if changed:
        return "mask", painted
    if painted is None and choice != "accept":
        return "invalid", None
    return "mask", predicted if predicted is not None else painted


def _iou(a: np.ndarray | None, b: np.ndarray | None) -> float | None:
    if a is None or b is None or a.shape != b.shape:
        return None
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def compare(a: tuple[str, np.ndarray | None], b: tuple[str, np.ndarray | None], min_iou: float) -> dict[str, Any]:
    """Two outcomes: ``{"verdicts_agree", "iou" (None unless both are masks), "agree"}``."""
    verdicts_agree = a[0] == b[0]
    iou = _iou(a[1], b[1]) if verdicts_agree and a[0] == "mask" else None
    if not verdicts_agree:
        agree = False
    elif a[0] != "mask" or (a[1] is None and b[1] is None):
        agree = True
    else:
        agree = iou is not None and iou >= min_iou
    return {"verdicts_agree": verdicts_agree, "iou": iou, "agree": agree}


@dataclass
class Resolution:
    review: dict[str, Any] | None  # the review that decides (None: no review, or a conflict)
    how: str  # "none" | "single" | "agreed" | "latest" | "lead" | "majority" | "adjudicated" | "conflict"
    reviewers: list[str]
    pairs: list[dict[str, Any]]  # pairwise comparisons between reviewers: {"a", "b", "verdicts_agree", "iou", "agree"}

    @property
    def conflict(self) -> bool:
        return self.how == "conflict"


def resolve(reviews: list[dict[str, Any]] | None, predicted: np.ndarray | None,
            policy: ReviewPolicy | None = None) -> Resolution:
    """Apply the policy to the reviews of one sample (each reviewer's latest counts)."""
    policy = policy or ReviewPolicy()
    votes = per_reviewer(reviews or [])
    if not votes:
        return Resolution(None, "none", [], [])
    usable = {who: r for who, r in votes.items() if not r.get("invalid")} or votes
    outcomes = {who: outcome(r, predicted) for who, r in usable.items()}
    names = sorted(usable)
    pairs = [{"a": a, "b": b, **compare(outcomes[a], outcomes[b], policy.min_iou)}
             for a, b in itertools.combinations(names, 2)]
    if len(usable) == 1:
        return Resolution(next(iter(usable.values())), "single", names, pairs)
    last = latest(usable.values())
    all_agree = all(p["agree"] for p in pairs)
    lead = usable.get(policy.lead)
    if policy.resolve == "latest":
        return Resolution(last, "agreed" if all_agree else "latest", names, pairs)
    if policy.resolve == "lead":
        if lead is not None:
            return Resolution(lead, "agreed" if all_agree else "lead", names, pairs)
        return Resolution(last, "agreed" if all_agree else "latest", names, pairs)
    if all_agree:
        return Resolution(last, "agreed", names, pairs)
    if policy.resolve == "consensus":
        agrees = {(p["a"], p["b"]) for p in pairs if p["agree"]} | {(p["b"], p["a"]) for p in pairs if p["agree"]}
        best: list[str] = []
        for who in names:  # the largest group of reviewers who each agree with one of them
            group = [w for w in names if w == who or (who, w) in agrees]
            if all(a == b or (a, b) in agrees for a in group for b in group) and len(group) > len(best):
                best = group
        if 2 * len(best) > len(names):
            return Resolution(latest(usable[w] for w in best), "majority", names, pairs)
        return Resolution(None, "conflict", names, pairs)
    # adjudicate: the lead decides by saving a review after every other reviewer
    if lead is not None and all(_key(lead) > _key(r) for who, r in usable.items() if who != policy.lead):
        return Resolution(lead, "adjudicated", names, pairs)
    return Resolution(None, "conflict", names, pairs)


def summary(resolutions: dict[str, Resolution], reviews: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """Per-reviewer counts, agreement between reviewers of the same task and the open conflicts."""
    per: dict[str, dict[str, int]] = defaultdict(lambda: {"annotations": 0, "samples": 0})
    reviews = list(reviews)
    versions = {(r.get("annotation_id"), reviewer_of(r)) for r in reviews}
    for review in reviews:
        per[reviewer_of(review)]["annotations"] += 1
    # another reviewer updated an annotation in place before its author's version was ever pulled: that one is lost
    overwritten = sorted({r["sample_id"] for r in reviews
                          if r.get("edited_over") and (r.get("annotation_id"), r["edited_over"]) not in versions})
    pair_stats: dict[str, dict[str, list]] = defaultdict(lambda: {"verdicts": [], "ious": []})
    how: dict[str, int] = defaultdict(int)
    for resolution in resolutions.values():
        how[resolution.how] += 1
        for who in resolution.reviewers:
            per[who]["samples"] += 1
        for pair in resolution.pairs:
            for key in (f"{pair['a']} ~ {pair['b']}", "all"):
                pair_stats[key]["verdicts"].append(pair["verdicts_agree"])
                if pair["iou"] is not None:
                    pair_stats[key]["ious"].append(pair["iou"])
    agreement = {key: {"pairs": len(s["verdicts"]), "verdict_agreement": float(np.mean(s["verdicts"])),
                       "mask_pairs": len(s["ious"]),
                       "mean_mask_iou": float(np.mean(s["ious"])) if s["ious"] else None}
                 for key, s in sorted(pair_stats.items())}
    conflicts = sorted(sid for sid, r in resolutions.items() if r.conflict)
    return {"reviewers": {who: dict(c) for who, c in sorted(per.items())},
            "multi_reviewed": sum(len(r.reviewers) > 1 for r in resolutions.values()),
            "resolution": dict(sorted(how.items())), "agreement": agreement,
            "open_conflicts": len(conflicts), "adjudication_queue": conflicts,
            "overwritten_before_pull": overwritten}
