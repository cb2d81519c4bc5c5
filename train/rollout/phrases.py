"""Where an edit's target phrase sits in a prompt's tokens (the attention-concentration reward's text queries)."""
from __future__ import annotations

import torch


def phrase_char_spans(prompt: str, phrases: str | list[str] | None) -> list[tuple[int, int]]:
    """Character spans of every whole-word, case-insensitive occurrence of the phrase(s) in ``prompt``."""
    import re

    phrases = [phrases] if isinstance(phrases, str) else list(phrases or [])
    spans = []
    for phrase in phrases:
        phrase = phrase.strip()
        if phrase:
            pattern = r"(?<!\w)" + re.escape(phrase) + r"(?!\w)"
            spans += [match.span() for match in re.finditer(pattern, prompt, flags=re.IGNORECASE)]
    return spans


def tokens_in_spans(offsets: torch.Tensor, spans: list[tuple[int, int]]) -> torch.Tensor:
    """(T,) bool: tokens whose character offsets ``(T, 2)`` overlap one of ``spans`` (special/padding tokens have
    empty offsets and never match)."""
    starts, ends = offsets[:, 0], offsets[:, 1]
    selected = torch.zeros(offsets.shape[0], dtype=torch.bool)
    for start, end in spans:
        selected |= (starts < end) & (ends > start) & (ends > starts)
    return selected
