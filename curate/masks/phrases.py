"""Grounding phrases: what Grounding-DINO is asked to find, and how its prompt is written.

Records carry ``target_phrases`` once the MLLM rewriting stage has run. Until then (and for records it could not
parse) :func:`phrases_from_instruction` derives them from the instruction with a small, documented heuristic:

1. ``replace X with Y`` / ``swap X for Y`` / ``turn X into Y``      -> ``[X, Y]`` (both objects are grounded)
2. ``change|make|paint|color ... X (to|into|red|...)``              -> ``[X]``   (the object changed in place)
3. ``add|put|place|insert|draw X (on|to|in|... Z)``                 -> ``[X]``   (the new object; Z is only context)
4. ``remove|delete|erase|take away|get rid of X (from ...)``        -> ``[X]``
5. no verb matched: the first noun phrase introduced by an article (``the cat``, ``a red car``)

Phrases are short noun phrases without articles; the heuristic never invents words that are not in the instruction.
An empty list means "nothing groundable", and the caller flags the record.
"""
from __future__ import annotations

import re

_ARTICLES = r"(?:the|a|an|some|this|that|these|those|his|her|its|their)"
# Words that end a noun phrase: prepositions, conjunctions, the start of a clause, and colours after a noun
# ("make the shirt green"); a colour BEFORE the noun ("a red hat") is kept.
_PREPOSITIONS = (
    r"(?:to|on|onto|in|into|at|near|next|beside|behind|above|below|under|over|from|with|for|of|by|as)"
)
_STOP = (
    r"(?:so|and|while|that|which|then|but|instead|making|leaving|keeping|is|are|be|become|should|look|looks|"
    r"appear|seem|red|orange|yellow|green|blue|purple|pink|brown|black|white|gray|grey|golden|silver)"
)
_PRONOUNS = {"it", "them", "him", "her", "everything", "image", "picture", "photo"}
_MAX_WORDS = 4

_PATTERNS: list[tuple[re.Pattern[str], tuple[int, ...]]] = [
    (re.compile(r"\b(?:replace|swap|substitute)\s+(.+?)\s+(?:with|for|by)\s+(.+)"), (1, 2)),
    (re.compile(r"\b(?:turn|transform|convert)\s+(.+?)\s+into\s+(.+)"), (1, 2)),
    (re.compile(r"\b(?:change|alter)\s+(?:the\s+)?(?:colou?r|material|texture|shape|size)\s+of\s+(.+)"), (1,)),
    (re.compile(r"\b(?:change|make|paint|colou?r|recolou?r|dye|alter|adjust|modify|resize)\s+(.+)"), (1,)),
    (re.compile(r"\b(?:add|put|place|insert|draw|include|give)\s+(.+)"), (1,)),
    (re.compile(r"\b(?:remove|delete|erase|eliminate)\s+(.+)"), (1,)),
    (re.compile(r"\b(?:take away|get rid of)\s+(.+)"), (1,)),
]
_FIRST_NOUN_PHRASE = re.compile(rf"\b{_ARTICLES}\s+(.+)")


def phrases_from_instruction(instruction: str | None) -> list[str]:
    """Target phrases derived from an edit instruction (see the module docstring for the rules)."""
    text = _normalise(instruction or "")
    if not text:
        return []
    for pattern, groups in _PATTERNS:
        match = pattern.search(text)
        if match:
            phrases = [_noun_phrase(match.group(g)) for g in groups]
            return _unique([p for p in phrases if p])  # a matched verb decides, even when its object is "it"
    match = _FIRST_NOUN_PHRASE.search(text)
    phrase = _noun_phrase(match.group(1)) if match else ""
    return [phrase] if phrase else []


def record_phrases(record: dict) -> list[str]:
    """``target_phrases`` when the record has them, else the instruction heuristic (refined instruction first)."""
    phrases = [p.strip() for p in (record.get("target_phrases") or []) if p and p.strip()]
    if phrases:
        return _unique(phrases)
    return phrases_from_instruction(record.get("instruction_refined") or record.get("instruction"))


def detector_prompt(phrases: list[str]) -> str:
    """Grounding-DINO's prompt format: lowercase phrases, each ending with a period (``"a cat. red car."``)."""
    cleaned = [re.sub(r"[.\s]+", " ", p.lower()).strip() for p in phrases]
    return " ".join(f"{p}." for p in cleaned if p)


def _normalise(text: str) -> str:
    text = text.lower().replace("’", "'")
    text = re.sub(r"[^a-z0-9' -]+", " ", text)  # punctuation ends nothing useful for us: drop it
    return re.sub(r"\s+", " ", text).strip()


def _noun_phrase(fragment: str) -> str:
    """Drop leading articles/prepositions, then cut at the first stop word; keep at most a few words."""
    words = fragment.split()
    while words and re.fullmatch(f"{_ARTICLES}|{_PREPOSITIONS}", words[0]):
        words.pop(0)
    kept: list[str] = []
    for word in words:
        if kept and re.fullmatch(f"{_PREPOSITIONS}|{_STOP}", word):
            break
        kept.append(word)
    if not kept or kept[0] in _PRONOUNS:
        return ""
    return " ".join(kept[:_MAX_WORDS])


def _unique(items: list[str]) -> list[str]:
    seen: dict[str, None] = {}
    for item in items:
        seen.setdefault(item, None)
    return list(seen)
