"""The backend interface and registry. A backend turns requests into responses; the client adds the cache.

Backends are registered by name with a lazy ``"module:Class"`` path, so importing the registry never imports
httpx, torch or transformers. Add one with :func:`register_backend`.
"""
from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from typing import Callable, Iterator, Union

from editkit.mllm.config import ClientConfig
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
_REGISTRY: dict[str, Union[str, BackendFactory]] = {
    "none": NoneBackend,
    "openai": "editkit.mllm.openai_backend:OpenAIBackend",
    "transformers": "editkit.mllm.hf_backend:TransformersBackend",
}


def register_backend(name: str, factory: Union[str, BackendFactory]) -> None:
    _REGISTRY[name] = factory


def available_backends() -> list[str]:
    return sorted(_REGISTRY)


def make_backend(config: ClientConfig) -> Backend:
    try:
        factory = _REGISTRY[config.backend]
    except KeyError:
        raise ValueError(f"unknown MLLM backend {config.backend!r}; available: {available_backends()}") from None
    if isinstance(factory, str):
        module, _, attribute = factory.partition(":")
        factory = getattr(importlib.import_module(module), attribute)
    return factory(config)
