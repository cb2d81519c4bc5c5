"""MLLM judge scores for benchmark outputs, through the shared MLLM client (:mod:`editkit.mllm`).

* **GEdit** (VIEScore-style, 0-10): a semantic-consistency request (source + edited image + instruction) returns two
  scores, editing success and over-editing; a perceptual-quality request (edited image only) returns naturalness and
  artifacts. ``SC = min(success, over-editing)``, ``PQ = min(naturalness, artifacts)``, ``O = sqrt(SC * PQ)``.
* **ImgEdit** (1-5): one request per item with the benchmark's per-type rubric (``prompts.json`` of the local copy
  when present, else our own rubric), answered as ``Name: <score>`` lines; the three scores are averaged.

Judges drift, so the prompts are pinned: they live in the prompt store (``PROMPT_FILES``), and the judge's version
(``PROMPT_VERSIONS`` plus the content hash of its prompt files and of an ImgEdit rubric file) goes into every
request's cache key and every cached answer; every raw answer is cached in ``<run>/judge/<id>.json`` beside the
parsed scores. ``repeats`` > 1 judges each item several times and reports the mean and spread. A malformed answer
gives no score and a recorded reason; nothing is guessed.
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

from editkit.mllm.prompts import Prompt, load_prompt

PROMPT_VERSIONS = {"gedit": "gedit-viescore-v1", "imgedit": "imgedit-rubric-v1"}
# the prompt-store files of each benchmark's judge (editkit/mllm/prompts/<name>_<version>.txt)
PROMPT_FILES = {"gedit": (("gedit_sc", "v1"), ("gedit_pq", "v1")), "imgedit": (("imgedit_rubric", "v1"),)}


def judge_prompts(bench: str) -> list[Prompt]:
    return [load_prompt(name, version) for name, version in PROMPT_FILES[bench]]


def prompts_sha(prompts: Sequence[Prompt], rubric: dict[str, str] | None = None) -> str:
    """One content hash over the judge's prompt files (and the benchmark's own rubric file, when used)."""
    digest = hashlib.sha256()
    for prompt in prompts:
        digest.update(f"{prompt.name}_{prompt.version}\0{prompt.sha}\0".encode())
    if rubric:
        digest.update(json.dumps(rubric, sort_keys=True).encode())
    return digest.hexdigest()


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
        self.prompts = judge_prompts(bench)
        self.prompt_version = PROMPT_VERSIONS[bench]
        if bench == "imgedit" and rubric:
            digest = hashlib.sha1(json.dumps(rubric, sort_keys=True).encode()).hexdigest()[:10]
            self.prompt_version = f"imgedit-prompts-{digest}"
        self.prompt_sha = prompts_sha(self.prompts, rubric if bench == "imgedit" else None)
        self.prompt_version = f"{self.prompt_version}:{self.prompt_sha[:8]}"  # an edited prompt: a new version

    def requests(self, record: dict[str, Any], category: str, source: np.ndarray, edited: np.ndarray) -> list[Any]:
        from editkit.mllm.messages import Request, user

        stamp = {"prompt_version": self.prompt_version, "prompt_sha": self.prompt_sha}
        if self.bench == "gedit":
            sc, pq = self.prompts
            return [Request((user(sc.render(instruction=record["instruction"]), source, edited),), **stamp),
                    Request((user(pq.render(), edited),), **stamp)]
        template = (self.rubric or {}).get(category)  # the benchmark's own rubric (prompts.json), else ours
        text = (template.replace("<edit_prompt>", record["instruction"]) if template is not None
                else self.prompts[0].render(instruction=record["instruction"]))
        return [Request((user(text, source, edited),), **stamp)]

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
            entry: dict[str, Any] = {"prompt_version": self.prompt_version, "prompt_sha": self.prompt_sha,
                                     "model": self.model,
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
