"""Client settings: one dataclass shared by every user of the MLLM client (rewrite, judge, rewards).

A ``params.yaml`` section that configures a client lists these keys (plus its own, e.g. ``prompt_version``).
The API key itself is never a parameter: ``api_key_env`` names the environment variable that holds it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional


@dataclass
class ClientConfig:
    backend: str = "none"  # none | openai | transformers (editkit.mllm.backends.BACKENDS)
    model: str = ""  # hub id or local path (transformers); served model name (openai; "" = the only one served)
    endpoint: str = ""  # OpenAI-compatible base URL, e.g. http://127.0.0.1:8000/v1 (vLLM, SGLang)
    api_key_env: str = ""  # NAME of the env var holding the API key ("" = no key); the key is never logged or cached
    allow_private_endpoint: bool = False  # openai: allow a private/link-local endpoint host (loopback always is)
    max_concurrency: int = 8  # openai: requests in flight; transformers: generation batch size
    timeout_s: float = 120.0  # per HTTP attempt, end to end (connect + send + the whole answer)
    budget_s: Optional[float] = None  # openai: wall-clock budget of the whole stage; no retry starts after it
    retries: int = 4  # extra attempts on timeouts, connection errors, 429 and 5xx (never on other 4xx)
    backoff_s: float = 0.5  # first retry delay; doubles each attempt, with full jitter
    backoff_max_s: float = 30.0
    temperature: float = 0.0
    max_tokens: int = 512
    cache_dir: str = "data/cache/mllm"  # on-disk response cache ("" disables it)
    device: str = "auto"  # transformers: auto | cpu | cuda[:i]
    max_pixels: int = 512 * 28 * 28  # transformers: Qwen2.5-VL image processor budget per image

    def __post_init__(self) -> None:
        if self.max_concurrency < 1:
            raise ValueError(f"max_concurrency must be >= 1, got {self.max_concurrency}")
        if self.retries < 0:
            raise ValueError(f"retries must be >= 0, got {self.retries}")
        if self.timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0, got {self.timeout_s}")
        if self.budget_s is not None and self.budget_s <= 0:
            raise ValueError(f"budget_s must be > 0 (or null: no budget), got {self.budget_s}")
