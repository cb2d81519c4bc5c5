"""A hostile OpenAI-compatible server on 127.0.0.1 that echoes the caller's API key everywhere it can.

The key (the ``Authorization: Bearer`` value it receives) comes back as the served model id (``GET /v1/models``),
in answers (content, ``finish_reason``, log-prob tokens), in error bodies with every request header, and in a
response header. ``redirect_to`` answers every request with a 307 to another URL instead (to check that nothing
follows it). Requests are recorded (``server.requests``: method, path, headers, JSON body)::

    with EchoServer() as server:      # server.url == "http://127.0.0.1:PORT/v1"
        ...
"""
from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from typing import Any, Optional

from tests.support.loopback import LoopbackServer


@dataclass
class Seen:
    method: str
    path: str
    headers: dict
    body: Any

    @property
    def text(self) -> str:
        messages = (self.body or {}).get("messages", []) if isinstance(self.body, dict) else []
        out = []
        for message in messages:
            content = message.get("content")
            out += [content] if isinstance(content, str) else [p.get("text", "") for p in content or []
                                                             if p.get("type") == "text"]
        return "\n".join(out)


def key_of(headers: dict) -> str:
    value = next((v for k, v in headers.items() if k.lower() == "authorization"), "")
    return value.split(" ", 1)[1] if " " in value else value


def echo_answer(seen: Seen) -> tuple[int, Any]:
    """The default behaviour: the answer depends on words in the request's text.

    ``bad`` -> HTTP 400 listing every request header; ``garbage`` -> a 200 whose body is not JSON, with the key;
    anything else -> a valid rewrite JSON answer naming the key (as instruction and target phrase), with the key as
    ``finish_reason`` and, when log-probs are asked for, as the tokens (one character each)."""
    key = key_of(seen.headers)
    if "bad" in seen.text:
        return 400, "Bad request. You sent:\n" + "\n".join(f"{k}: {v}" for k, v in seen.headers.items())
    if "garbage" in seen.text:
        return 200, f"not json, your key is {key}"
    content = json.dumps({"instruction": f"paint the box with {key}", "edit_type": "recolor",
                          "target_phrases": [key], "scope": "local"})
    choice: dict[str, Any] = {"index": 0, "message": {"role": "assistant", "content": content},
                              "finish_reason": key}
    body = seen.body if isinstance(seen.body, dict) else {}
    if body.get("logprobs"):
        choice["logprobs"] = {"content": [{"token": c, "logprob": 0.0, "top_logprobs": [{"token": key, "logprob": -1.0}]}
                                          for c in key]}
    return 200, {"id": key, "object": "chat.completion", "model": key, "choices": [choice]}


class EchoServer(LoopbackServer):
    def __init__(self, answer=echo_answer, redirect_to: Optional[str] = None, extra_models: tuple[str, ...] = ()):
        self.answer = answer
        self.redirect_to = redirect_to
        self.extra_models = extra_models
        self.requests: list[Seen] = []
        self._lock = threading.Lock()

    def __enter__(self) -> "EchoServer":
        server = self

        class _Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def _record(self, body: Any) -> Seen:
                seen = Seen(self.command, self.path, dict(self.headers), body)
                with server._lock:
                    server.requests.append(seen)
                return seen

            def do_GET(self) -> None:
                seen = self._record(None)
                if server.redirect_to:
                    self._send(307, "", {"Location": server.redirect_to + self.path})
                elif self.path.rstrip("/") == "/v1/models":
                    ids = [key_of(seen.headers), *server.extra_models]
                    self._send(200, {"object": "list", "data": [{"id": i, "object": "model"} for i in ids]})
                elif self.path.rstrip("/") == "/health":
                    self._send(200, "")
                else:
                    self._send(404, {"error": f"not found; you sent {dict(self.headers)}"})

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = None
                seen = self._record(body)
                if server.redirect_to:
                    self._send(307, "", {"Location": server.redirect_to + self.path})
                    return
                status, reply = server.answer(seen)
                self._send(status, reply)

            def _send(self, status: int, body: Any, headers: Optional[dict] = None) -> None:
                data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
                key = key_of(dict(self.headers))
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    if key:
                        self.send_header("X-Echo-Key", key)
                    for name, value in (headers or {}).items():
                        self.send_header(name, value)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self._serve(_Handler)
        return self
