"""Any OpenAI-compatible chat-completions endpoint (vLLM, SGLang, hosted APIs) over httpx.

* images travel as base64 data URLs; the API key is read from the env var named in the config and only ever
  placed in the ``Authorization`` header; everything taken from a server (answers, error bodies, exception texts)
  passes :class:`editkit.mllm.redact.Redactor` before it is returned, logged or cached, so a server echoing the
  request headers cannot leak the key; the model ids a server lists are redacted and kept short before they are
  stored (``model_id``: metrics, records, the cache) or printed;
* requests go to the endpoint's host only, and only if it is a public address or loopback (a private or
  link-local one needs ``allow_private_endpoint``; a cloud metadata service never): :mod:`editkit.mllm.endpoint`.
  Every connection is checked again, and redirects are never followed;
* ``timeout_s`` is a deadline for each attempt, end to end (connect, send, headers, the whole body: a server
  trickling bytes is cut off, :mod:`editkit.mllm.deadline`); ``budget_s`` bounds the backend's whole life (a
  stage): no attempt or retry starts after it, and one in flight ends with it;
* at most ``max_concurrency`` requests are in flight (a thread pool over one pooled ``httpx.Client``);
* timeouts, connection errors, 429 and 5xx are retried with exponential backoff and jitter (``Retry-After`` is
  honoured); other 4xx are not retried; answers over ``MAX_RESPONSE_BYTES`` are refused;
* the endpoint is probed at start (``GET /models``, else ``GET /health``; answers over ``MAX_PROBE_BYTES`` refused)
  with a clear error if it is down.
"""
from __future__ import annotations

import json
import logging
import os
import random
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from typing import Any, Iterator, Optional

from editkit.mllm.backends import Backend, MLLMError
from editkit.mllm.config import ClientConfig
from editkit.mllm.deadline import deadline, deadline_transport
from editkit.mllm.endpoint import check_endpoint
from editkit.mllm.messages import Request, Response, TokenLogprob
from editkit.mllm.redact import Redactor, redact_http_logs

log = logging.getLogger("editkit.mllm")
RETRYABLE_STATUS = {408, 429, 500, 502, 503, 504}
MAX_RESPONSE_BYTES = 32 << 20  # a chat completion is kilobytes; more is a broken or hostile server
MAX_PROBE_BYTES = 1 << 20  # a model list is a few hundred bytes


def backoff_delay(attempt: int, base: float, cap: float, rng: random.Random, retry_after: Optional[float] = None) -> float:
    """Delay before retry ``attempt`` (0-based): "equal jitter", uniform in [d/2, d] with d = min(cap, base·2^attempt).

    Half the delay is guaranteed (so a struggling server really gets relief), half is random (so clients that
    failed together do not retry together). A server's ``Retry-After`` is a lower bound, still capped.
    """
    step = min(cap, base * (2 ** attempt))
    delay = step / 2 + rng.uniform(0, step / 2)
    if retry_after is not None:
        delay = max(delay, min(cap, retry_after))
    return delay


def encode_messages(request: Request) -> list[dict[str, Any]]:
    out = []
    for message in request.messages:
        if all(isinstance(p, str) for p in message.content):
            out.append({"role": message.role, "content": message.text})
            continue
        parts = [
            {"type": "text", "text": p} if isinstance(p, str) else {"type": "image_url", "image_url": {"url": p.data_url()}}
            for p in message.content
        ]
        out.append({"role": message.role, "content": parts})
    return out


def parse_completion(body: Any) -> Response:
    """A chat-completions JSON body -> Response; a body of the wrong shape is an error response, not a crash."""
    try:
        choice = body["choices"][0]
        text = choice["message"]["content"]
        if not isinstance(text, str):
            raise TypeError("message.content is not a string")
        logprobs = None
        content = (choice.get("logprobs") or {}).get("content")
        if content is not None:
            logprobs = [
                TokenLogprob(_token(t["token"]), float(t["logprob"]),
                             [(_token(a["token"]), float(a["logprob"])) for a in t.get("top_logprobs") or []])
                for t in content
            ]
        return Response(text=text, logprobs=logprobs, finish_reason=choice.get("finish_reason"))
    except (KeyError, IndexError, TypeError, ValueError) as error:
        return Response(error=f"malformed chat-completions response ({type(error).__name__}: {error})")


def _token(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError("a log-prob token is not a string")
    return value


class OpenAIBackend(Backend):
    name = "openai"

    def __init__(self, config: ClientConfig, probe: bool = True):
        import httpx

        super().__init__(config)
        if not config.endpoint:
            raise MLLMError("backend openai needs `endpoint` (e.g. http://127.0.0.1:8000/v1 for `vllm serve`)")
        self.endpoint = config.endpoint.rstrip("/")
        guard = check_endpoint(self.endpoint, config.allow_private_endpoint)  # before the key is read or sent
        headers = {"Content-Type": "application/json"}
        secrets = []
        if config.api_key_env:
            key = os.environ.get(config.api_key_env)
            if not key:
                raise MLLMError(f"environment variable {config.api_key_env} (api_key_env) is not set or empty")
            headers["Authorization"] = f"Bearer {key}"
            secrets = [key, headers["Authorization"]]
        self.redact = Redactor(secrets)
        redact_http_logs(self.redact)
        limits = httpx.Limits(max_connections=config.max_concurrency, max_keepalive_connections=config.max_concurrency)
        self._http = httpx.Client(
            headers=headers,
            timeout=httpx.Timeout(config.timeout_s, connect=min(10.0, config.timeout_s)),
            transport=deadline_transport(guard=guard, limits=limits),
            follow_redirects=False,  # a redirect is an answer (an error), never a second request elsewhere
        )
        self._budget_end = None if config.budget_s is None else time.monotonic() + float(config.budget_s)
        self._rng = random.Random()
        self._model: Any = config.model  # what requests name: may be a server-given id, sent back to that server only
        if probe:
            self._model = self.probe()
        self._model_label = self.redact.label(self._model)

    @property
    def model_id(self) -> str:
        """The model, as stored (metrics, records, cache) and printed: redacted, one line, at most 200 characters."""
        return self._model_label

    def _get(self, url: str, seconds: float) -> tuple[int, bytes]:
        """GET ``url`` within ``seconds``, end to end; the body is refused beyond ``MAX_PROBE_BYTES``."""
        with deadline(time.monotonic() + seconds), self._http.stream("GET", url, timeout=seconds) as answer:
            data = bytearray()
            for chunk in answer.iter_bytes():
                data += chunk
                if len(data) > MAX_PROBE_BYTES:
                    raise MLLMError(f"MLLM endpoint {self.endpoint}: the answer to GET {url[len(self.endpoint):]} "
                                    f"is larger than {MAX_PROBE_BYTES} bytes: refused")
            return answer.status_code, bytes(data)

    def probe(self) -> str:
        """Check the endpoint answers; return the model name to use. Raises MLLMError with what to do."""
        import httpx

        hint = ("start the server (e.g. `vllm serve Qwen/Qwen2.5-VL-7B-Instruct --port 8000` and "
                "endpoint: http://127.0.0.1:8000/v1) or set backend: none")
        probe_s = min(10.0, self.config.timeout_s)
        try:
            status, body = self._get(f"{self.endpoint}/models", probe_s)
        except httpx.HTTPError as error:
            raise MLLMError(self.redact(f"MLLM endpoint {self.endpoint} is not reachable ({type(error).__name__}: "
                                        f"{error}); {hint}")) from None
        if status in (401, 403):
            raise MLLMError(f"MLLM endpoint {self.endpoint} refused the API key (HTTP {status}); "
                            f"check the env var named by api_key_env ({self.config.api_key_env or 'none set'})")
        if status == 200:
            try:
                served = [m["id"] for m in json.loads(body)["data"]]
            except Exception:
                served = []
            # Model ids come from the server: redacted and cut short before they go into any message.
            if not self.config.model:
                if len(served) != 1:
                    raise MLLMError(f"set `model`: endpoint {self.endpoint} serves "
                                    f"{self.redact.names(served) or 'an unknown list'}")
                return served[0]
            if served and self.config.model not in served:
                raise MLLMError(f"model {self.config.model!r} is not served by {self.endpoint}; it serves "
                                f"{self.redact.names(served)}")
            return self.config.model
        # No models route: fall back to the server root's /health (vLLM and SGLang both have it).
        root = self.endpoint[: -len("/v1")] if self.endpoint.endswith("/v1") else self.endpoint
        try:
            health, _ = self._get(f"{root}/health", probe_s)
        except httpx.HTTPError as error:
            raise MLLMError(self.redact(f"MLLM endpoint {self.endpoint} is not reachable ({type(error).__name__}); "
                                        f"{hint}")) from None
        if health != 200:
            raise MLLMError(f"MLLM endpoint {self.endpoint} is not healthy: GET /models -> {status}, "
                            f"GET /health -> {health}; {hint}")
        if not self.config.model:
            raise MLLMError(f"set `model`: {self.endpoint} does not list its models")
        return self.config.model

    def payload(self, request: Request) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self._model,
            "messages": encode_messages(request),
            "max_tokens": request.max_tokens or self.config.max_tokens,
            "temperature": self.config.temperature if request.temperature is None else request.temperature,
        }
        if request.top_logprobs:
            body["logprobs"] = True
            body["top_logprobs"] = request.top_logprobs
        return body

    def _post(self, request: Request) -> Response:
        """One request with retries; the answer or the error comes back redacted."""
        response = self._attempts(self.payload(request))
        return Response(text=self.redact(response.text), logprobs=self._redact_logprobs(response.logprobs),
                        finish_reason=None if response.finish_reason is None else self.redact.label(
                            response.finish_reason, 40), error=self.redact(response.error))

    def _redact_logprobs(self, logprobs: Optional[list[TokenLogprob]]) -> Optional[list[TokenLogprob]]:
        """Tokens are server text too: each is redacted, and log-probs whose tokens together spell a secret are
        dropped (the answer's text, redacted, stays)."""
        if not logprobs:
            return logprobs
        if self.redact.leaks("".join(t.token for t in logprobs)):
            return None
        return [TokenLogprob(self.redact(t.token), t.logprob, [(self.redact(a), lp) for a, lp in t.top])
                for t in logprobs]

    def _attempts(self, body: dict[str, Any]) -> Response:
        attempts = self.config.retries + 1
        last = ""
        for attempt in range(attempts):
            started = time.monotonic()
            if self._budget_end is not None and started >= self._budget_end:
                return Response(error=f"stage budget of {self.config.budget_s}s spent after {attempt} attempt(s)"
                                      + (f": {last}" if last else ""))
            until = started + self.config.timeout_s
            cut_by_budget = self._budget_end is not None and self._budget_end < until
            final, last, retry_after = self._attempt(body, min(until, self._budget_end) if cut_by_budget else until)
            if final is not None:
                return final
            if cut_by_budget and time.monotonic() >= self._budget_end:
                last = f"{last}; stage budget of {self.config.budget_s}s spent"
                break
            if attempt + 1 < attempts:
                delay = backoff_delay(attempt, self.config.backoff_s, self.config.backoff_max_s, self._rng, retry_after)
                if self._budget_end is not None and time.monotonic() + delay >= self._budget_end:
                    last = f"{last}; no retry: stage budget of {self.config.budget_s}s would be spent"
                    break
                log.info("MLLM request attempt %d/%d failed (%s); retrying in %.2fs", attempt + 1, attempts,
                         self.redact(last), delay)
                time.sleep(delay)
        return Response(error=f"gave up after {attempt + 1} attempt(s): {last}")

    def _attempt(self, body: dict[str, Any], until: float) -> tuple[Optional[Response], str, Optional[float]]:
        """One HTTP exchange that ends by ``until``: (final response or None to retry, what failed, Retry-After)."""
        import httpx

        try:
            with deadline(until), self._http.stream("POST", f"{self.endpoint}/chat/completions", json=body) as answer:
                data = bytearray()
                for chunk in answer.iter_bytes():
                    data += chunk
                    if len(data) > MAX_RESPONSE_BYTES:
                        return Response(error=f"response larger than {MAX_RESPONSE_BYTES} bytes: refused"), "", None
        except httpx.TimeoutException as error:
            return None, f"timeout after {self.config.timeout_s}s ({type(error).__name__})", None
        except httpx.TransportError as error:
            return None, self.redact(f"connection error ({type(error).__name__}: {error})"), None
        text = bytes(data).decode("utf-8", "replace")
        if answer.status_code == 200:
            try:
                return parse_completion(json.loads(text)), "", None
            except ValueError:
                return Response(error=f"response body is not JSON: {self.redact(text)[:200]!r}"), "", None
        detail = f"HTTP {answer.status_code}: {self.redact(text)[:300]}"  # redact BEFORE cutting: no half key
        if answer.status_code not in RETRYABLE_STATUS:
            return Response(error=detail), "", None  # our request is wrong: retrying cannot help
        return None, detail, _retry_after(answer.headers.get("retry-after"))

    def generate(self, requests: list[Request]) -> Iterator[tuple[int, Response]]:
        """Answers as they complete. At most ``max_concurrency`` requests are out at a time, and the next one is
        sent only once the caller has taken an answer (and cached it): a run killed at any moment loses at most
        the answers of the requests in flight, however slowly the caller keeps up."""
        if not requests:
            return
        window = min(self.config.max_concurrency, len(requests))
        queued = iter(enumerate(requests))
        running: dict = {}
        with ThreadPoolExecutor(max_workers=window) as pool:

            def send_next() -> None:
                for index, request in queued:
                    running[pool.submit(self._post, request)] = index
                    return

            for _ in range(window):
                send_next()
            try:
                while running:
                    done, _ = wait(running, return_when=FIRST_COMPLETED)
                    for future in done:
                        yield running.pop(future), future.result()
                        send_next()
            finally:  # the caller stopped early (e.g. Ctrl-C): nothing more is sent
                for future in running:
                    future.cancel()

    def close(self) -> None:
        self._http.close()


def _retry_after(value: Optional[str]) -> Optional[float]:
    try:
        return None if value is None else max(0.0, float(value))
    except ValueError:
        return None  # HTTP-date form: ignore, use our own backoff
