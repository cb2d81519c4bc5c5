"""The backend interface and registry. A backend turns requests into responses; the client adds the cache.

Backends live in :data:`BACKENDS` (an :class:`editkit.registry.Registry`); the built-ins are lazy ``"module:Class"``
entries, so importing the registry never imports httpx, torch or transformers. Add one with
``@BACKENDS.register("name")`` on a :class:`Backend` subclass (docs/extending.md).
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Callable, Iterator

from editkit.mllm.config import ClientConfig
from editkit.registry import Registry, callable_with, subclass_of
from editkit.mllm.messages import Request, Response


class MLLMError(RuntimeError):
    """A configuration or connection problem that makes the whole backend unusable (not one bad request)."""


class Backend(ABC):
    name: str = ""

    def __init__(self, config: ClientConfig):
        self.config = config

    @property
    def model_id(self) -> str:
        """The model identity that goes into the cache key."""
        return self.config.model

    @abstractmethod
    def generate(self, requests: list[Request]) -> Iterator[tuple[int, Response]]:
        """Yield ``(index, response)`` for every request, in completion order. Per-request failures are
        responses with ``error`` set; only problems that make the backend unusable raise :class:`MLLMError`."""

    def close(self) -> None:
        pass


class NoneBackend(Backend):
    """Explicit pass-through: no model is queried; callers keep their inputs (``finish_reason="none"``)."""

    name = "none"

    @property
    def model_id(self) -> str:
        return "none"

    def generate(self, requests: list[Request]) -> Iterator[tuple[int, Response]]:
        for index in range(len(requests)):
            yield index, Response(text=None, finish_reason="none")


BackendFactory = Callable[[ClientConfig], Backend]


def _check_backend(entry) -> str | None:
    """A :class:`Backend` subclass, or a factory ``factory(client_config) -> Backend``."""
    return subclass_of(Backend)(entry) if isinstance(entry, type) else callable_with("client_config")(entry)


BACKENDS: Registry[BackendFactory] = Registry("MLLM backend", lazy={
    "openai": "editkit.mllm.openai_backend:OpenAIBackend",
    "transformers": "editkit.mllm.hf_backend:TransformersBackend",
}, check=_check_backend)
BACKENDS.register("none", NoneBackend)


def make_backend(config: ClientConfig) -> Backend:
    return BACKENDS.get(config.backend)(config)
