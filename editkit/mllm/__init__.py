"""One MLLM client for the whole system (instruction rewriting, the benchmark judge, RL rewards).

``Client(ClientConfig(...)).generate([Request(...), ...]) -> [Response, ...]``; backends ``none``, ``openai``
(vLLM/SGLang/any chat-completions server), ``transformers`` (local Qwen2.5-VL); an on-disk cache. Heavy libraries
(httpx, torch, transformers) are imported only when a backend is built.
"""
from editkit.mllm.backends import BACKENDS, Backend, MLLMError
from editkit.mllm.client import Client
from editkit.mllm.config import ClientConfig
from editkit.mllm.messages import ImagePart, Message, Request, Response, TokenLogprob, assistant, system, user

__all__ = [
    "BACKENDS", "Backend", "MLLMError", "Client", "ClientConfig", "ImagePart",
    "Message", "Request", "Response", "TokenLogprob", "assistant", "system", "user", "Structured", "ask_json",
    "parse_json",
]


def __getattr__(name: str):
    # pydantic costs ~0.1 s to import: load the structured-output helpers only when asked for.
    if name in ("Structured", "ask_json", "parse_json"):
        from editkit.mllm import structured

        return getattr(structured, name)
    raise AttributeError(f"module 'editkit.mllm' has no attribute {name!r}")
