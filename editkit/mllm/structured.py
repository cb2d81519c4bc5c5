"""Strict JSON out of an MLLM: parse, validate with a pydantic model, one repair round, then a recorded fallback.

Outcome per request (``Structured.status``):
* ``ok``                 the first reply validated;
* ``repaired``           the first reply did not, the repair request (which sends the error back) did;
* ``fallback:<reason>``  no usable reply; reason is ``request_failed``, ``no_json``, ``invalid_json`` or
  ``schema`` (of the LAST attempt). The caller keeps its original data and records the status.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from typing import Generic, Optional, TypeVar

from pydantic import BaseModel, ValidationError

from editkit.mllm.client import Client
from editkit.mllm.messages import Request, Response, assistant, user

T = TypeVar("T", bound=BaseModel)

REPAIR_TEMPLATE = ("Your previous reply could not be used: {error}\n"
                   "Reply again with ONLY the corrected JSON object, no other text.")


class ParseError(ValueError):
    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


@dataclass
class Structured(Generic[T]):
    value: Optional[T]
    status: str
    errors: list[str] = field(default_factory=list)  # what went wrong at each attempt
    raw: list[Optional[str]] = field(default_factory=list)  # the reply texts


def parse_json(text: Optional[str], model: type[T], allow_array: bool = False) -> T:
    """The first JSON object in ``text`` (code fences and chatter around it tolerated), validated by ``model``.

    ``allow_array``: a top-level JSON array that starts before any object is taken instead (some models answer
    with a bare list, e.g. Qwen2.5-VL's ``[{"bbox_2d": ...}]``); ``model`` must then accept a list."""
    openers = "{[" if allow_array else "{"
    starts = [text.index(c) for c in openers if c in text] if text else []
    if not starts:
        raise ParseError("no_json", "the reply contains no JSON " + ("object or array" if allow_array else "object"))
    decoder = json.JSONDecoder()
    start = min(starts)
    try:
        data, _ = decoder.raw_decode(text, start)
    except json.JSONDecodeError as error:
        raise ParseError("invalid_json", f"the JSON is malformed: {error.msg} at character {error.pos}") from None
    try:
        return model.model_validate(data)
    except ValidationError as error:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'object'}: {e['msg']}" for e in error.errors())
        raise ParseError("schema", f"the JSON does not match the schema: {problems}") from None


def _attempt(response: Response, model: type[T], allow_array: bool = False
             ) -> tuple[Optional[T], Optional[ParseError]]:
    if not response.ok:
        return None, ParseError("request_failed", response.error or "no reply")
    try:
        return parse_json(response.text, model, allow_array), None
    except ParseError as error:
        return None, error


def ask_json(client: Client, requests: list[Request], model: type[T], repair: bool = True,
             progress: bool = False, allow_array: bool = False) -> list[Structured[T]]:
    """Send ``requests`` (prompts asking for JSON matching ``model``) and validate the replies
    (``allow_array``: see :func:`parse_json`)."""
    first = client.generate(requests, progress=progress, desc="mllm")
    results: list[Structured[T]] = []
    retry: list[int] = []
    for index, response in enumerate(first):
        value, error = _attempt(response, model, allow_array)
        if error is None:
            results.append(Structured(value, "ok", [], [response.text]))
        else:
            results.append(Structured(None, f"fallback:{error.reason}", [str(error)], [response.text]))
            # A failed request already had its retries; repairing only helps a reply that arrived.
            if repair and error.reason != "request_failed":
                retry.append(index)
    if not retry:
        return results
    repairs = [
        replace(requests[i], messages=requests[i].messages
                + (assistant(first[i].text or ""), user(REPAIR_TEMPLATE.format(error=results[i].errors[0]))))
        for i in retry
    ]
    for index, response in zip(retry, client.generate(repairs, progress=progress, desc="mllm repair")):
        value, error = _attempt(response, model, allow_array)
        result = results[index]
        result.raw.append(response.text)
        if error is None:
            result.value, result.status = value, "repaired"
        else:
            result.status = f"fallback:{error.reason}"
            result.errors.append(str(error))
    return results
