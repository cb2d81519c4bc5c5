"""MLLM judge scores for benchmark outputs, through the shared MLLM client (:mod:`editkit.mllm`).

* **GEdit** (VIEScore-style, 0-10): a semantic-consistency request (source + edited image + instruction) returns two
  scores, editing success and over-editing; a perceptual-quality request (edited image only) returns naturalness and
  artifacts. ``SC = min(success, over-editing)``, ``PQ = min(naturalness, artifacts)``, ``O = sqrt(SC * PQ)``.
* **ImgEdit** (1-5): one request per item with the benchmark's per-type rubric (``prompts.json`` of the local copy
  when present, else our own rubric), answered as ``Name: <score>`` lines; the three scores are averaged.

Judges drift, so the prompt version is pinned (``PROMPT_VERSIONS``; an ImgEdit rubric file is pinned by its hash)
and every raw answer is cached in ``<run>/judge/<id>.json`` beside the parsed scores. ``repeats`` > 1 judges each
item several times and reports the mean and spread. A malformed answer gives no score and a recorded reason;
nothing is guessed.
"""
from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from editkit import store

PROMPT_VERSIONS = {"gedit": "gedit-viescore-v1", "imgedit": "imgedit-rubric-v1"}

GEDIT_SC_PROMPT = (
    "You are a strict evaluator of instruction-based image edits. The first image is the original, the second is "
    "the edited result. The editing instruction was: \"{instruction}\"\n"
    "Give two integer scores from 0 to 10:\n"
    "1. editing success: how well the edit does what the instruction asks (0 = not at all, 10 = perfectly);\n"
    "2. over-editing: how well everything the instruction does not mention is left unchanged "
    "(0 = the image was changed everywhere, 10 = nothing else changed).\n"
    "Answer with JSON only: {{\"score\": [<editing success>, <over-editing>], \"reasoning\": \"<one sentence>\"}}"
)
GEDIT_PQ_PROMPT = (
    "You are a strict evaluator of image quality. Look at the image and give two integer scores from 0 to 10:\n"
    "1. naturalness: does the image look like a real, coherent picture (lighting, perspective, proportions)?\n"
    "2. artifacts: how free is the image of distortions, blur, noise, watermarks or broken details "
    "(0 = heavy artifacts, 10 = none)?\n"
    "Answer with JSON only: {\"score\": [<naturalness>, <artifacts>], \"reasoning\": \"<one sentence>\"}"
)
IMGEDIT_RUBRIC = (
    "You grade an image edit. The first image is the original, the second the edited result. "
    "The instruction was: <edit_prompt>\n"
    "Write one line of brief reasoning, then exactly these three lines with integer scores from 1 to 5:\n"
    "Prompt Compliance: <score>\nVisual Seamlessness: <score>\nPhysical & Detail Fidelity: <score>"
)

Complete = Callable[[list[Any]], list[Any]]  # list[editkit.mllm.messages.Request] -> list[Response]


class JudgeError(ValueError):
    """The judge's answer could not be parsed into the expected scores."""


def parse_score_pair(text: str, low: float = 0, high: float = 10) -> tuple[float, float]:
    """``{"score": [a, b], ...}`` (possibly inside a code fence or prose) -> (a, b), range-checked."""
    match = re.search(r"\{.*\}", text or "", re.S)
    if not match:
        raise JudgeError(f"no JSON object in the judge answer: {text!r:.200}")
    try:
        data = json.loads(match.group(0))
        scores = [float(s) for s in data["score"]]
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as error:
        raise JudgeError(f"judge answer is not {{\"score\": [a, b]}}: {error}: {text!r:.200}") from None
    if len(scores) != 2 or not all(low <= s <= high and math.isfinite(s) for s in scores):
        raise JudgeError(f"expected two scores in [{low}, {high}], got {scores}")
    return scores[0], scores[1]


def parse_rubric_scores(text: str, expected: int = 3, low: int = 1, high: int = 5) -> list[float]:
    """``Name: <int>`` lines -> the scores (ImgEdit's answer format); exactly ``expected`` of them in range."""
    line = re.compile(r"^[^:\n]*[A-Za-z][^:\n]*:\s*\**\s*(\d+)\s*\**\s*$", re.M)  # "Name: 4" (markdown bold ok)
    scores = [int(m.group(1)) for m in line.finditer(text or "")]
    if len(scores) != expected or not all(low <= s <= high for s in scores):
        raise JudgeError(f"expected {expected} 'Name: score' lines with scores {low}-{high}, got {scores}: "
                         f"{text!r:.200}")
    return [float(s) for s in scores]


def gedit_scores(sc_pair: tuple[float, float], pq_pair: tuple[float, float]) -> dict[str, float]:
    sc, pq = min(sc_pair), min(pq_pair)
    return {"judge_sc": sc, "judge_pq": pq, "judge_o": math.sqrt(sc * pq)}


class Judge:
    """Scores one benchmark's outputs; ``complete`` is the shared client's batch call."""

    def __init__(self, bench: str, complete: Complete, model: str, rubric: dict[str, str] | None = None,
                 repeats: int = 1):
        if repeats < 1:
            raise ValueError(f"judge repeats must be >= 1, got {repeats}")
        self.bench, self.complete, self.model, self.repeats = bench, complete, model, repeats
        self.rubric = rubric
        self.prompt_version = PROMPT_VERSIONS[bench]
        if bench == "imgedit" and rubric:
            digest = hashlib.sha1(json.dumps(rubric, sort_keys=True).encode()).hexdigest()[:10]
            self.prompt_version = f"imgedit-prompts-{digest}"

    def requests(self, record: dict[str, Any], category: str, source: np.ndarray, edited: np.ndarray) -> list[Any]:
        from editkit.mllm.messages import Request, user

        version = self.prompt_version
        if self.bench == "gedit":
            return [Request((user(GEDIT_SC_PROMPT.format(instruction=record["instruction"]), source, edited),),
                            prompt_version=version),
                    Request((user(GEDIT_PQ_PROMPT, edited),), prompt_version=version)]
        template = (self.rubric or {}).get(category, IMGEDIT_RUBRIC)
        return [Request((user(template.replace("<edit_prompt>", record["instruction"]), source, edited),),
                        prompt_version=version)]

    def parse(self, texts: Sequence[str]) -> dict[str, float]:
        if self.bench == "gedit":
            return gedit_scores(parse_score_pair(texts[0]), parse_score_pair(texts[1]))
        scores = parse_rubric_scores(texts[0])
        return {"judge_avg": float(np.mean(scores))}

    def score(self, run_dir: Path | str, work: Sequence[tuple[dict[str, Any], str, np.ndarray, np.ndarray]],
              progress: bool = True) -> dict[str, dict[str, Any]]:
        """``work`` = (record, category, source, edited); returns id -> {"scores": {...}} or {"error": reason}.

        With ``repeats`` > 1 every item is judged that many times (distinct cache keys; use a temperature > 0),
        the scores are the means over the parsable repeats and ``<score>_std`` their spread.
        """
        from tqdm.auto import tqdm

        cache_dir = Path(run_dir) / "judge"
        results: dict[str, dict[str, Any]] = {}
        todo = []
        for record, category, source, edited in work:
            cached = _read_cache(cache_dir / f"{record['id']}.json", self.prompt_version, self.model, self.repeats)
            if cached is not None:
                results[record["id"]] = cached
                continue
            base = self.requests(record, category, source, edited)
            todo.append((record, [[replace(r, prompt_version=f"{r.prompt_version}#repeat{k}") if k else r for r in base]
                                  for k in range(self.repeats)]))
        flat = [request for _, repeats in todo for requests in repeats for request in requests]
        responses = iter(self.complete(flat) if flat else [])
        for record, repeats in tqdm(todo, desc="judge", disable=not progress):
            answers = [[next(responses) for _ in requests] for requests in repeats]
            entry: dict[str, Any] = {"prompt_version": self.prompt_version, "model": self.model,
                                     "repeats": self.repeats, "raw": [[a.text for a in run] for run in answers]}
            failed = [a.error or "empty answer" for run in answers for a in run if not a.ok]
            if failed:
                entry["error"] = f"judge request failed: {failed[0]}"
                results[record["id"]] = entry  # not cached: a later run retries it
                continue
            parsed, errors = [], []
            for run in answers:
                try:
                    parsed.append(self.parse([a.text for a in run]))
                except JudgeError as error:
                    errors.append(str(error))
            if parsed:
                entry["scores"] = {k: float(np.mean([p[k] for p in parsed])) for k in parsed[0]}
                if self.repeats > 1:
                    entry["scores"].update({f"{k}_std": float(np.std([p[k] for p in parsed])) for k in parsed[0]})
            if errors:
                entry["error" if not parsed else "partial"] = f"malformed judge answer: {errors[0]}"
            store.write_json(cache_dir / f"{record['id']}.json", entry)
            results[record["id"]] = entry
        return results


def _read_cache(path: Path, prompt_version: str, model: str, repeats: int) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    entry = json.loads(path.read_text())
    if (entry.get("prompt_version"), entry.get("model"), entry.get("repeats")) != (prompt_version, model, repeats):
        return None
    return entry
