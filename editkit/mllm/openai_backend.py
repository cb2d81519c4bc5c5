"""Any OpenAI-compatible chat-completions endpoint (vLLM, SGLang, hosted APIs) over httpx.

* images travel as base64 data URLs; the API key is read from the env var named in the config and only ever
  placed in the ``Authorization`` header (never logged, never part of an error message or the cache);
* at most ``max_concurrency`` requests are in flight (a thread pool over one pooled ``httpx.Client``);
* timeouts, connection errors, 429 and 5xx are retried with exponential backoff and jitter (``Retry-After`` is
  honoured); other 4xx are not retried;
* the endpoint is probed at start (``GET /models``, else ``GET /health``) with a clear error if it is down.
"""
from __future__ import annotations

import logging
import os
import random
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import Any, Iterator, Optional

from editkit.mllm.backends import Backend, MLLMError
from editkit.mllm.config import ClientConfig
from editkit.mllm.messages import Request, Response, TokenLogprob

log = logging.getLogger("editkit.mllm")
RETRYABLE_STATUS = {408, 429, 500, 502, 503, 504}


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
                TokenLogprob(t["token"], float(t["logprob"]),
                             [(a["token"], float(a["logprob"])) for a in t.get("top_logprobs") or []])
                for t in content
            ]
        return Response(text=text, logprobs=logprobs, finish_reason=choice.get("finish_reason"))
    except (KeyError, IndexError, TypeError, ValueError) as error:
        return Response(error=f"malformed chat-completions response ({type(error).__name__}: {error})")


class OpenAIBackend(Backend):
    name = "openai"

    def __init__(self, config: ClientConfig, probe: bool = True):
        import httpx

        super().__init__(config)
        if not config.endpoint:
            raise MLLMError("backend openai needs `endpoint` (e.g. http://127.0.0.1:8000/v1 for `vllm serve`)")
        self.endpoint = config.endpoint.rstrip("/")
        headers = {"Content-Type": "application/json"}
        if config.api_key_env:
            key = os.environ.get(config.api_key_env)
            if not key:
                raise MLLMError(f"environment variable {config.api_key_env} (api_key_env) is not set or empty")
            headers["Authorization"] = f"Bearer {key}"
        self._http = httpx.Client(
            headers=headers,
            timeout=httpx.Timeout(config.timeout_s, connect=min(10.0, config.timeout_s)),
            limits=httpx.Limits(max_connections=config.max_concurrency, max_keepalive_connections=config.max_concurrency),
        )
        self._rng = random.Random()
        self._model = config.model
        if probe:
            self._model = self.probe()

    @property
    def model_id(self) -> str:
        return self._model

    def probe(self) -> str:
        """Check the endpoint answers; return the model name to use. Raises MLLMError with what to do."""
        import httpx

        hint = ("start the server (e.g. `vllm serve Qwen/Qwen2.5-VL-7B-Instruct --port 8000` and "
                "endpoint: http://127.0.0.1:8000/v1) or set backend: none")
        try:
            answer = self._http.get(f"{self.endpoint}/models", timeout=min(10.0, self.config.timeout_s))
        except httpx.HTTPError as error:
            raise MLLMError(f"MLLM endpoint {self.endpoint} is not reachable ({type(error).__name__}: {error}); "
                            f"{hint}") from None
        if answer.status_code in (401, 403):
            raise MLLMError(f"MLLM endpoint {self.endpoint} refused the API key (HTTP {answer.status_code}); "
                            f"check the env var named by api_key_env ({self.config.api_key_env or 'none set'})")
        if answer.status_code == 200:
            try:
                served = [m["id"] for m in answer.json()["data"]]
            except Exception:
                served = []
            if not self.config.model:
                if len(served) != 1:
                    raise MLLMError(f"set `model`: endpoint {self.endpoint} serves {served or 'an unknown list'}")
                return served[0]
            if served and self.config.model not in served:
                raise MLLMError(f"model {self.config.model!r} is not served by {self.endpoint}; it serves {served}")
            return self.config.model
        # No models route: fall back to the server root's /health (vLLM and SGLang both have it).
        root = self.endpoint[: -len("/v1")] if self.endpoint.endswith("/v1") else self.endpoint
        try:
            health = self._http.get(f"{root}/health", timeout=min(10.0, self.config.timeout_s))
        except httpx.HTTPError as error:
            raise MLLMError(f"MLLM endpoint {self.endpoint} is not reachable ({type(error).__name__}); {hint}") from None
        if health.status_code != 200:
            raise MLLMError(f"MLLM endpoint {self.endpoint} is not healthy: GET /models -> {answer.status_code}, "
                            f"GET /health -> {health.status_code}; {hint}")
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
        import httpx

        body = self.payload(request)
        attempts = self.config.retries + 1
        last = ""
        for attempt in range(attempts):
            retry_after = None
            try:
                answer = self._http.post(f"{self.endpoint}/chat/completions", json=body)
            except httpx.TimeoutException as error:
                last = f"timeout after {self.config.timeout_s}s ({type(error).__name__})"
            except httpx.TransportError as error:
                last = f"connection error ({type(error).__name__}: {error})"
            else:
                if answer.status_code == 200:
                    try:
                        return parse_completion(answer.json())
                    except ValueError:
                        return Response(error=f"response body is not JSON: {answer.text[:200]!r}")
                detail = f"HTTP {answer.status_code}: {answer.text[:300]}"
                if answer.status_code not in RETRYABLE_STATUS:
                    return Response(error=detail)  # our request is wrong: retrying cannot help
                last = detail
                retry_after = _retry_after(answer.headers.get("retry-after"))
            if attempt + 1 < attempts:
                delay = backoff_delay(attempt, self.config.backoff_s, self.config.backoff_max_s, self._rng, retry_after)
                log.info("MLLM request attempt %d/%d failed (%s); retrying in %.2fs", attempt + 1, attempts, last, delay)
                time.sleep(delay)
        return Response(error=f"gave up after {attempts} attempt(s): {last}")

    def generate(self, requests: list[Request]) -> Iterator[tuple[int, Response]]:
        if not requests:
            return
        with ThreadPoolExecutor(max_workers=min(self.config.max_concurrency, len(requests))) as pool:
            futures = {pool.submit(self._post, r): i for i, r in enumerate(requests)}
            try:
                for future in as_completed(futures):
                    yield futures[future], future.result()
            finally:  # the caller stopped early (e.g. Ctrl-C): do not start what is still queued
                for future in futures:
                    future.cancel()

    def close(self) -> None:
        self._http.close()


def _retry_after(value: Optional[str]) -> Optional[float]:
    try:
        return None if value is None else max(0.0, float(value))
    except ValueError:
        return None  # HTTP-date form: ignore, use our own backoff
