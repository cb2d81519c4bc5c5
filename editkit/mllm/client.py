"""The client every caller uses: a backend plus the on-disk cache, over batches of requests."""
from __future__ import annotations

import logging
from collections import Counter
from dataclasses import replace
from typing import Iterable, Optional

from editkit.mllm.backends import Backend, make_backend
from editkit.mllm.cache import ResponseCache, request_key
from editkit.mllm.config import ClientConfig
from editkit.mllm.messages import Request, Response

log = logging.getLogger("editkit.mllm")


class Client:
    """``Client(config).generate(requests)`` -> one :class:`Response` per request, in order.

    Cached responses come back with ``cached=True``; fresh ones are written to the cache the moment they arrive.
    ``stats`` counts ``cache_hits``, ``sent`` and ``errors`` over the client's life.
    """

    def __init__(self, config: ClientConfig, backend: Optional[Backend] = None):
        self.config = config
        self.backend = backend if backend is not None else make_backend(config)
        use_cache = bool(config.cache_dir) and self.backend.name != "none"
        self.cache = ResponseCache(config.cache_dir) if use_cache else None
        self.stats: Counter = Counter()

    def _resolve(self, request: Request) -> Request:
        """Fill defaults from the config, so the cache key reflects what was actually asked for."""
        return replace(
            request,
            max_tokens=self.config.max_tokens if request.max_tokens is None else request.max_tokens,
            temperature=self.config.temperature if request.temperature is None else request.temperature,
        )

    def generate(self, requests: Iterable[Request], progress: bool = False, desc: str = "mllm") -> list[Response]:
        from tqdm.auto import tqdm

        requests = [self._resolve(r) for r in requests]
        responses: list[Optional[Response]] = [None] * len(requests)
        keys = [request_key(self.backend.name, self.backend.model_id, r) for r in requests]
        pending = []
        for index, key in enumerate(keys):
            hit = self.cache.get(key) if self.cache is not None else None
            if hit is not None:
                responses[index] = hit
                self.stats["cache_hits"] += 1
            else:
                pending.append(index)
        with tqdm(total=len(pending), desc=desc, unit="req", disable=not progress or not pending) as bar:
            for local, response in self.backend.generate([requests[i] for i in pending]):
                index = pending[local]
                responses[index] = response
                self.stats["sent"] += 1
                if response.error is not None:
                    self.stats["errors"] += 1
                    log.warning("MLLM request failed: %s", response.error)
                elif self.cache is not None:
                    self.cache.put(keys[index], self.backend.name, self.backend.model_id, requests[index], response)
                bar.update(1)
        missing = [i for i, r in enumerate(responses) if r is None]
        if missing:
            raise RuntimeError(f"backend {self.backend.name} returned no response for {len(missing)} request(s)")
        return responses  # type: ignore[return-value]

    def generate_one(self, request: Request) -> Response:
        return self.generate([request])[0]

    def close(self) -> None:
        self.backend.close()
        if self.cache is not None:
            self.cache.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
