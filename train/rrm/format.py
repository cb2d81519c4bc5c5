"""The one output format of the RRM: principles in keep / follow / quality groups, one verdict per principle, a
final integer score. Parsed and validated by the MLLM client's structured-output code
(:func:`editkit.mllm.structured.parse_json` + a pydantic model), so a trajectory sampled in training, a teacher's
answer and a served RRM's reply are read by exactly the same code.

Canonical text (what SFT trains on; keys in this order, so the score comes last, after the reasoning)::

    {"principles":{"keep":[...],"follow":[...],"quality":[...]},
     "verdicts":[{"group":"keep","principle":"...","satisfied":"yes","reason":"..."}, ...],"score":7}
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Optional

from editkit.errors import ConfigError

GROUPS = ("keep", "follow", "quality")
PROMPT_DIR = Path(__file__).parent / "prompts"
SCORE_FIELD = re.compile(r'"score"\s*:\s*(-?\d+)')


@dataclass(frozen=True)
class FormatConfig:
    score_min: int = 0
    """lowest score the judgement may give"""
    score_max: int = 10
    """highest score the judgement may give (above score_min)"""
    prompt_version: str = "v1"
    """judgement prompt file: train/rrm/prompts/rrm_<version>.txt"""

    def __post_init__(self) -> None:
        if self.score_max <= self.score_min:
            raise ConfigError(f"score_max ({self.score_max}) must be > score_min ({self.score_min})")


@lru_cache(maxsize=8)
def judgement_model(score_min: int = 0, score_max: int = 10):
    """The pydantic model of one judgement for a score range (built on first use: pydantic imports lazily)."""
    from typing import Literal

    from pydantic import BaseModel, Field, model_validator

    class Principles(BaseModel):
        keep: list[str] = Field(default_factory=list)
        follow: list[str] = Field(default_factory=list)
        quality: list[str] = Field(default_factory=list)

    class Verdict(BaseModel):
        group: Literal["keep", "follow", "quality"]
        principle: str
        satisfied: Literal["yes", "no"]
        reason: str = ""

    class Judgement(BaseModel):
        principles: Principles
        verdicts: list[Verdict] = Field(min_length=1)
        score: int = Field(ge=score_min, le=score_max)

        @model_validator(mode="after")
        def one_verdict_per_principle(self):
            listed = [(g, p) for g in GROUPS for p in getattr(self.principles, g)]
            if not listed:
                raise ValueError("no principles in any group")
            judged = [(v.group, v.principle) for v in self.verdicts]
            if sorted(judged) != sorted(listed):
                raise ValueError(f"verdicts must cover each principle exactly once: {len(judged)} verdicts for "
                                 f"{len(listed)} principles, or principles that do not match")
            return self

        def satisfied_fraction(self, group: Optional[str] = None) -> float:
            chosen = [v for v in self.verdicts if group is None or v.group == group]
            return sum(v.satisfied == "yes" for v in chosen) / len(chosen) if chosen else float("nan")

    return Judgement


def parse_trajectory(text: Optional[str], fmt: FormatConfig = FormatConfig()):
    """A trajectory's text -> the validated judgement; :class:`editkit.mllm.structured.ParseError` otherwise."""
    from editkit.mllm.structured import parse_json

    return parse_json(text, judgement_model(fmt.score_min, fmt.score_max))


def trajectory_score(text: Optional[str], fmt: FormatConfig = FormatConfig()) -> float:
    """The final score of a valid trajectory, NaN for an invalid one (the caller decides what NaN means)."""
    from editkit.mllm.structured import ParseError

    try:
        return float(parse_trajectory(text, fmt).score)
    except ParseError:
        return math.nan


def render_trajectory(principles: dict[str, list[str]], verdicts: list[dict[str, Any]], score: int) -> str:
    """The canonical trajectory text (compact JSON, reasons omitted when empty, score last)."""
    groups = {g: list(principles.get(g, [])) for g in GROUPS}
    unknown = set(principles) - set(GROUPS)
    if unknown:
        raise ValueError(f"unknown principle group(s) {sorted(unknown)}; groups are {GROUPS}")
    rows = []
    for verdict in verdicts:
        row = {"group": verdict["group"], "principle": verdict["principle"], "satisfied": verdict["satisfied"]}
        if verdict.get("reason"):
            row["reason"] = verdict["reason"]
        rows.append(row)
    return json.dumps({"principles": groups, "verdicts": rows, "score": int(score)}, separators=(",", ":"),
                      ensure_ascii=False)


def canonical(judgement) -> str:
    """A validated judgement (e.g. a teacher's, with chatter around it) -> the canonical text SFT trains on."""
    return render_trajectory(judgement.principles.model_dump(), [v.model_dump() for v in judgement.verdicts],
                             judgement.score)


def prompt_text(instruction: str, fmt: FormatConfig = FormatConfig()) -> tuple[str, str]:
    """(text, tag) of the RRM prompt for an instruction; the tag goes into MLLM cache keys."""
    from editkit.mllm.prompts import load_prompt

    prompt = load_prompt("rrm", fmt.prompt_version, PROMPT_DIR)
    text = prompt.render(instruction=instruction, score_min=str(fmt.score_min), score_max=str(fmt.score_max))
    return text.rstrip("\n"), prompt.tag


def build_request(instruction: str, source: Any, edited: Any, fmt: FormatConfig = FormatConfig(),
                  max_tokens: Optional[int] = None, temperature: Optional[float] = None, top_logprobs: int = 0):
    """The one RRM request (text, then the source and the edited image), shared by training and the reward."""
    from editkit.mllm import Request, user

    text, tag = prompt_text(instruction, fmt)
    return Request((user(text, source, edited),), max_tokens=max_tokens, temperature=temperature,
                   top_logprobs=top_logprobs, prompt_version=tag)
