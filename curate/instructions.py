"""Instruction rewriting with the MLLM client: prompt -> strict JSON -> validated record fields.

The prompt (``prompts/rewrite_<version>.txt``) lists the edit taxonomy of :mod:`editkit.taxonomy` with the
GEdit-Bench and ImgEdit-Bench categories mapped to each type. Replies are validated by :class:`RewriteOutput`;
see :mod:`editkit.mllm.structured` for the repair round and the ``fallback:<reason>`` outcomes.
"""
from __future__ import annotations

import json
from typing import Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from editkit import schema, taxonomy
from editkit.mllm.client import Client
from editkit.mllm.messages import ImagePart, Request, system, user
from editkit.mllm.prompts import Prompt, load_prompt
from editkit.mllm.structured import Structured, ask_json


class RewriteOutput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    instruction: str = Field(min_length=3, max_length=400)
    edit_type: str
    target_phrases: list[str] = Field(max_length=8)
    scope: Literal["local", "global"]

    @field_validator("instruction")
    @classmethod
    def _strip(cls, value: str) -> str:
        return " ".join(value.split())

    @field_validator("edit_type")
    @classmethod
    def _known_type(cls, value: str) -> str:
        if value not in taxonomy.EDIT_TYPES:
            raise ValueError(f"must be one of {sorted(taxonomy.EDIT_TYPES)}")
        return value

    @field_validator("target_phrases")
    @classmethod
    def _clean_phrases(cls, value: list[str]) -> list[str]:
        return [" ".join(p.split()).lower() for p in value if p.strip()]

    @model_validator(mode="after")
    def _consistent(self) -> "RewriteOutput":
        expected = taxonomy.get(self.edit_type).scope
        if self.scope != expected:
            raise ValueError(f"scope must be {expected!r} for edit_type {self.edit_type!r}")
        if expected == "local" and not self.target_phrases:
            raise ValueError(f"a local edit ({self.edit_type}) needs at least one target phrase")
        return self


def taxonomy_table() -> str:
    """One line per edit type: what the prompt (and docs/mllm.md, "Edit taxonomy") show."""
    lines = []
    for name, edit_type in taxonomy.EDIT_TYPES.items():
        gedit = [k for k, v in taxonomy.GEDIT_TO_EDIT_TYPE.items() if v == name]
        imgedit = [k for k, v in taxonomy.IMGEDIT_TO_EDIT_TYPE.items() if v == name]
        sources = ", ".join([f"GEdit-Bench {g}" for g in gedit] + [f"ImgEdit {i}" for i in imgedit])
        lines.append(f"- {name} ({edit_type.scope}): {edit_type.description}" + (f" [{sources}]" if sources else ""))
    return "\n".join(lines)


def build_request(prompt: Prompt, record: dict[str, Any], source: ImagePart, edited: Optional[ImagePart]) -> Request:
    known = record.get("edit_type")
    hint = (f"\nThe source dataset labels this edit as `{known}`; keep it unless the images clearly show otherwise.\n"
            if known in taxonomy.EDIT_TYPES else "")
    parts: list[Any] = ["SOURCE image:", source]
    if edited is not None:
        parts += ["EDITED image:", edited]
    parts.append(f"Original instruction: {record.get('instruction') or ''}")
    return Request((system(prompt.render(edit_types=taxonomy_table(), hint=hint)), user(*parts)), **prompt.stamp())


def apply(record: dict[str, Any], result: Structured[RewriteOutput], provenance: dict[str, Any]) -> None:
    """Write the outcome into the record (in place); on fallback keep the ingest fields."""
    value = result.value
    if value is not None:
        if record.get("edit_type") in taxonomy.EDIT_TYPES and record["edit_type"] != value.edit_type:
            schema.add_flag(record, "rewrite_changed_edit_type")
        record.update(instruction_refined=value.instruction, edit_type=value.edit_type,
                      target_phrases=value.target_phrases, scope=value.scope)
    else:
        record["instruction_refined"] = record.get("instruction")
        if record.get("scope") is None and record.get("edit_type") in taxonomy.EDIT_TYPES:
            record["scope"] = taxonomy.get(record["edit_type"]).scope
    record["rewrite_status"] = result.status
    meta = json.loads(record.get("meta") or "{}")
    meta["rewrite"] = {**provenance, "errors": result.errors} if result.errors else provenance
    record["meta"] = json.dumps(meta, sort_keys=True)


def rewrite_records(client: Client, prompt_version: str, records: list[dict[str, Any]], images) -> list[dict[str, Any]]:
    """The MLLM step over one shard: every ok record gets a rewrite outcome; rejected ones pass untouched."""
    prompt = load_prompt("rewrite", prompt_version)
    provenance = {"backend": client.backend.name, "model": client.backend.model_id, "prompt": prompt.tag,
                  "prompt_sha": prompt.sha}
    todo, requests = [], []
    for record in records:
        if not schema.is_ok(record):
            continue
        try:
            source = ImagePart.from_any(images.source_bytes(record["id"]))
            edited_bytes = images.edited_bytes(record["id"])
            edited = None if edited_bytes is None else ImagePart.from_any(edited_bytes)
        except (KeyError, ValueError) as error:
            apply(record, Structured(None, "fallback:image_unreadable", [str(error)]), provenance)
            continue
        todo.append(record)
        requests.append(build_request(prompt, record, source, edited))
    for record, result in zip(todo, ask_json(client, requests, RewriteOutput, progress=True)):
        apply(record, result, provenance)
    return records
