"""Target phrases from an English benchmark instruction ("Remove the red car" -> "red car").

Benchmark items come without target phrases, and grounding needs one. These few patterns cover the usual benchmark
phrasings; when none matches the item gets no phrase and is left to human review (never guessed).
"""
from __future__ import annotations

import re

_ARTICLE = re.compile(r"^(?:the|a|an|this|that|these|those|his|her|their|its)\s+", re.I)
_STOP = r"(?=\s+(?:with|to|into|in|on|from|at|so|and|while|by|for|,)\b|[.,;!]|$)"
# (pattern, group to take); first match wins. Each captures the thing in the SOURCE image.
_IN_IMAGE = re.compile(r"\s+(?:in|from|of|on)\s+(?:the|this)\s+(?:image|picture|photo|scene)$", re.I)
_PATTERNS = [
    (re.compile(r"\breplace\s+(.+?)\s+with\b", re.I), 1),
    (re.compile(r"\bchange\s+the\s+(?:colou?r|material|texture)\s+of\s+(.+?)" + _STOP, re.I), 1),
    (re.compile(r"\b(?:remove|delete|erase|get rid of)\s+(.+?)" + _STOP, re.I), 1),
    (re.compile(r"\b(?:keep|preserve)\s+(.+?)" + _STOP, re.I), 1),
    (re.compile(r"\b(?:make|turn|change|let)\s+(.+?)\s+(?:to|into|look|become|be|wear|hold|raise|smile)\b", re.I), 1),
    (re.compile(r"\b(?:add|put|place|insert)\s+(.+?)" + _STOP, re.I), 1),
]


def target_phrases(instruction: str) -> list[str]:
    """The edit target named in ``instruction`` as a lowercase noun phrase, or ``[]`` when unsure."""
    text = " ".join((instruction or "").split())
    for pattern, group in _PATTERNS:
        match = pattern.search(text)
        if match:
            phrase = _clean(match.group(group))
            if phrase:
                return [phrase]
    return []


def _clean(phrase: str) -> str:
    phrase = _IN_IMAGE.sub("", phrase.strip(" .,;:!\"'")).lower()
    previous = None
    while previous != phrase:
        previous, phrase = phrase, _ARTICLE.sub("", phrase)
    if not phrase or phrase in {"it", "them", "image", "picture", "photo", "background"}:
        return ""
    return phrase
