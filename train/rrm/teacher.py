"""`editkit rrm make-sft-data`: SFT trajectories from a served teacher, kept only if a second judge accepts them.

Edit-R1's cold start: a strong VLM writes reward trajectories in the RRM format (same prompt the RRM is trained
with, :func:`train.rrm.format.build_request`), a second VLM call checks each trajectory against the images, and
only accepted ones are kept. Both go through the shared MLLM client (strict JSON, one repair round). Every dropped
record is written to ``dropped.jsonl`` with its reason; images are copied beside the output file (content-hash
names), so the output folder is self-contained.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from editkit.mllm.config import ClientConfig
from train.rrm.data import contained_image, jsonl_rows
from train.rrm.format import FormatConfig, build_request, canonical, judgement_model
from editkit.errors import ConfigError

JUDGE_PROMPT = (
    "The first image is the original, the second the result of the edit \"{instruction}\". A reward model wrote "
    "this assessment of the edit:\n{trajectory}\n"
    "Is every verdict correct for these images, and does the final score agree with the verdicts? Answer with JSON "
    "only: {{\"accept\": \"yes\" or \"no\", \"reason\": \"<short>\"}}"
)


@dataclass
class MakeSFTConfig:
    input: str = "data/rrm/edits.jsonl"
    """edits to annotate, jsonl of {"source", "instruction", "edited"} (paths relative to its folder)"""
    output: str = "data/rrm/sft/sft.jsonl"
    """kept trajectories; dropped.jsonl and images/ beside it"""
    format: FormatConfig = field(default_factory=FormatConfig)
    """score range and prompt version of the judgement format"""
    teacher: ClientConfig = field(
        default_factory=lambda: ClientConfig(backend="openai", temperature=0.7, max_tokens=1024))
    """the MLLM client that writes the judgement trajectories"""
    judge: ClientConfig = field(default_factory=lambda: ClientConfig(backend="openai", max_tokens=256))
    """the MLLM client that checks each trajectory (judge_enabled)"""
    judge_enabled: bool = True
    """false: keep every valid teacher trajectory (no second opinion)"""


def _verdict_model():
    from typing import Literal

    from pydantic import BaseModel

    class JudgeVerdict(BaseModel):
        accept: Literal["yes", "no"]
        reason: str = ""

    return JudgeVerdict


def make_sft_data(config: MakeSFTConfig, teacher=None, judge=None) -> dict:
    """Write the SFT file; returns the counts. ``teacher``/``judge``: ready clients (else built from the config)."""
    from editkit.mllm import Client, Request, ask_json, user

    source_path, out = Path(config.input), Path(config.output)
    if not source_path.is_file():
        raise ConfigError(f"input file {source_path} not found")
    records, dropped = [], []
    for where, row in jsonl_rows(source_path):
        try:
            if isinstance(row, Exception):
                raise row
            instruction = row.get("instruction")
            if not isinstance(instruction, str) or not instruction.strip():
                raise ValueError("instruction: expected a non-empty string")
            records.append((where, instruction, contained_image(source_path.parent, row.get("source"), "source"),
                            contained_image(source_path.parent, row.get("edited"), "edited")))
        except ValueError as error:
            dropped.append({"where": where, "stage": "input", "reason": str(error)})
    teacher = teacher or Client(config.teacher)
    requests = [build_request(ins, src, edt, config.format) for _, ins, src, edt in records]
    answers = ask_json(teacher, requests, judgement_model(config.format.score_min, config.format.score_max))
    candidates = []
    for record, answer in zip(records, answers):
        if answer.value is None:
            dropped.append({"where": record[0], "stage": "teacher", "reason": f"teacher_{answer.status}: "
                            + (answer.errors[-1] if answer.errors else ""), "reply": answer.raw[-1]})
        else:
            candidates.append((record, canonical(answer.value)))
    if config.judge_enabled and candidates:
        judge = judge or Client(config.judge)
        asks = [Request((user(JUDGE_PROMPT.format(instruction=r[1], trajectory=t), r[2], r[3]),))
                for r, t in candidates]
        kept = []
        for (record, trajectory), verdict in zip(candidates, ask_json(judge, asks, _verdict_model())):
            if verdict.value is None:
                reason = f"judge_{verdict.status}: " + (verdict.errors[-1] if verdict.errors else "")
            elif verdict.value.accept == "no":
                reason = f"judge_rejected: {verdict.value.reason}"
            else:
                kept.append((record, trajectory))
                continue
            dropped.append({"where": record[0], "stage": "judge", "reason": reason, "trajectory": trajectory})
        candidates = kept
    out.parent.mkdir(parents=True, exist_ok=True)
    images = out.parent / "images"
    images.mkdir(exist_ok=True)
    with open(out, "w") as handle:
        for (where, instruction, source, edited), trajectory in candidates:
            names = [_store(images, image) for image in (source, edited)]
            handle.write(json.dumps({"source": f"images/{names[0]}", "instruction": instruction,
                                     "edited": f"images/{names[1]}", "trajectory": trajectory, "origin": where})
                         + "\n")
    with open(out.parent / "dropped.jsonl", "w") as handle:
        handle.writelines(json.dumps(d) + "\n" for d in dropped)
    return {"kept": len(candidates), "dropped": len(dropped), "read": len(records) + sum(
        d["stage"] == "input" for d in dropped)}


def _store(folder: Path, image) -> str:
    suffix = {"image/png": ".png", "image/jpeg": ".jpg", "image/webp": ".webp"}.get(image.mime, ".img")
    name = image.sha256[:16] + suffix
    if not (folder / name).exists():
        (folder / name).write_bytes(image.data)
    return name


def load_make_sft_config(path: Optional[str], overrides: list[str]) -> MakeSFTConfig:
    from editkit.config import load_file

    return load_file(MakeSFTConfig, path, overrides)
