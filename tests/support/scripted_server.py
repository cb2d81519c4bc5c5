"""A scripted OpenAI-compatible chat-completions server on 127.0.0.1, for tests and perf scripts.

``handler(request) -> reply`` decides every answer, so one server covers valid, malformed, slow and failing
responses::

    with ScriptedServer(lambda req: '{"score": 7}') as server:       # server.url == "http://127.0.0.1:PORT/v1"
        ...
    with ScriptedServer(sequence(Reply(status=503), "ok")) as server:  # first call fails, then "ok" forever

A reply is a ``str`` (the assistant's text), a ``dict`` (a raw JSON body) or a :class:`Reply` (status, body,
delay, headers, a byte-by-byte trickle). The server records every chat request (``server.requests``), counts them (``server.count``), and
tracks the most requests in flight at once (``server.max_in_flight``). It also serves ``GET /v1/models`` and
``GET /health`` (either can be switched off to script a half-broken endpoint), and stops itself on exit.
"""
from __future__ import annotations

import json
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any, Callable, Optional, Union

from tests.support.loopback import LoopbackServer


@dataclass
class Reply:
    status: int = 200
    body: Union[dict, str, None] = None  # dict: JSON; str: sent verbatim (e.g. malformed JSON); None: empty
    delay_s: float = 0.0  # sleep before answering (slow server / timeouts)
    headers: dict = field(default_factory=dict)  # e.g. {"Retry-After": "1"}
    trickle_s: float = 0.0  # > 0: send the whole response (status line, headers, body) one byte per trickle_s


@dataclass
class ChatRequest:
    index: int  # 0-based order of arrival among chat requests
    body: dict
    headers: dict
    arrived: float  # time.monotonic()

    @property
    def text(self) -> str:
        """All text parts of all messages, joined (what a handler usually matches on)."""
        out = []
        for message in self.body.get("messages", []):
            content = message.get("content")
            if isinstance(content, str):
                out.append(content)
            else:
                out += [p.get("text", "") for p in content or [] if p.get("type") == "text"]
        return "\n".join(out)

    @property
    def n_images(self) -> int:
        return sum(1 for m in self.body.get("messages", []) if not isinstance(m.get("content"), str)
                   for p in m["content"] if p.get("type") == "image_url")

    @property
    def wants_logprobs(self) -> int:
        return int(self.body.get("top_logprobs") or 0) if self.body.get("logprobs") else 0


Handler = Callable[[ChatRequest], Union[str, dict, Reply]]


def completion(text: str, logprobs: Optional[list[tuple[str, float, list[tuple[str, float]]]]] = None,
               finish_reason: str = "stop", model: str = "scripted") -> dict:
    """A chat-completions JSON body. ``logprobs``: ``[(token, logprob, [(alt, logprob), ...]), ...]``."""
    choice: dict[str, Any] = {"index": 0, "message": {"role": "assistant", "content": text},
                              "finish_reason": finish_reason}
    if logprobs is not None:
        choice["logprobs"] = {"content": [
            {"token": t, "logprob": lp, "top_logprobs": [{"token": a, "logprob": alp} for a, alp in top]}
            for t, lp, top in logprobs
        ]}
    return {"id": "scripted", "object": "chat.completion", "model": model, "choices": [choice]}


def sequence(*replies: Union[str, dict, Reply]) -> Handler:
    """Answer the i-th chat request with ``replies[i]`` (the last one repeats)."""
    return lambda request: replies[min(request.index, len(replies) - 1)]


def free_port() -> int:
    """A port nothing listens on right now (for "endpoint is down" tests)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ScriptedServer(LoopbackServer):
    def __init__(self, handler: Handler, models: tuple[str, ...] = ("scripted",), models_route: bool = True,
                 health_route: bool = True):
        self.handler = handler
        self.models = models
        self.models_route = models_route
        self.health_route = health_route
        self.requests: list[ChatRequest] = []
        self.max_in_flight = 0
        self._in_flight = 0
        self._lock = threading.Lock()

    @property
    def count(self) -> int:
        return len(self.requests)


    def __enter__(self) -> "ScriptedServer":
        server = self

        class _Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, like a real server
            disable_nagle_algorithm = True  # else headers and body in two writes cost a ~40 ms delayed ACK

            def log_message(self, *args) -> None:  # quiet
                pass

            def do_GET(self) -> None:
                if self.path.rstrip("/") == "/v1/models" and server.models_route:
                    self._send(Reply(body={"object": "list", "data": [{"id": m, "object": "model"} for m in server.models]}))
                elif self.path.rstrip("/") == "/health" and server.health_route:
                    self._send(Reply(body=""))
                else:
                    self._send(Reply(status=404, body={"error": "not found"}))

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                if self.path.rstrip("/") != "/v1/chat/completions":
                    self._send(Reply(status=404, body={"error": "not found"}))
                    return
                try:
                    body = json.loads(raw)
                except ValueError:
                    self._send(Reply(status=400, body={"error": "request body is not JSON"}))
                    return
                with server._lock:
                    request = ChatRequest(len(server.requests), body, dict(self.headers), time.monotonic())
                    server.requests.append(request)
                    server._in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server._in_flight)
                try:
                    reply = server.handler(request)
                    if isinstance(reply, str):
                        reply = Reply(body=completion(reply, _fake_logprobs(reply, request.wants_logprobs)))
                    elif isinstance(reply, dict):
                        reply = Reply(body=reply)
                    if reply.delay_s:
                        time.sleep(reply.delay_s)
                    self._send(reply)
                finally:
                    with server._lock:
                        server._in_flight -= 1

            def _send(self, reply: Reply) -> None:
                data = b"" if reply.body is None else (
                    reply.body.encode() if isinstance(reply.body, str) else json.dumps(reply.body).encode())
                if reply.trickle_s:
                    self._trickle(reply, data)
                    return
                try:
                    self.send_response(reply.status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    for key, value in reply.headers.items():
                        self.send_header(key, value)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout): nothing to answer

            def _trickle(self, reply: Reply, data: bytes) -> None:
                head = "".join([f"HTTP/1.1 {reply.status} Scripted\r\n", "Content-Type: application/json\r\n",
                                f"Content-Length: {len(data)}\r\n",
                                *(f"{k}: {v}\r\n" for k, v in reply.headers.items()), "\r\n"])
                self.close_connection = True
                try:
                    for byte in head.encode() + data:
                        self.wfile.write(bytes([byte]))
                        self.wfile.flush()
                        time.sleep(reply.trickle_s)
                except (BrokenPipeError, ConnectionResetError, OSError):
                    pass  # the client hung up: what a deadline is for

        self._serve(_Handler)
        return self


def _fake_logprobs(text: str, k: int) -> Optional[list]:
    """One token per character, certain (log-prob 0), with k-1 improbable alternatives."""
    if not k:
        return None
    return [(c, 0.0, [(c, 0.0)] + [(f"<alt{j}>", -10.0 - j) for j in range(1, k)]) for c in text]
