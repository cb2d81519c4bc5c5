"""Client settings: one dataclass shared by every user of the MLLM client (rewrite, judge, rewards).

A ``params.yaml`` section that configures a client lists these keys (plus its own, e.g. ``prompt_version``).
The API key itself is never a parameter: ``api_key_env`` names the environment variable that holds it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Optional

from editkit.config_meta import Range, check_fields


@dataclass
class ClientConfig:
    backend: str = "none"
    """the MLLM backend: none, openai or transformers (a key of editkit.mllm.backends.BACKENDS)"""
    model: str = ""
    """hub id or local path (transformers); served model name (openai; "" = the only one served)"""
    endpoint: str = ""
    """OpenAI-compatible base URL, e.g. http://127.0.0.1:8000/v1 (vLLM, SGLang)"""
    api_key_env: str = ""
    """NAME of the env var holding the API key ("" = no key); the key is never logged or cached"""
    allow_private_endpoint: bool = False
    """openai: allow an endpoint host on a private or link-local address (loopback always is; a cloud metadata service
    never is)"""
    max_concurrency: Annotated[int, Range(ge=1)] = 8
    """openai: requests in flight; transformers: generation batch size"""
    timeout_s: Annotated[float, Range(gt=0)] = 120.0
    """seconds per HTTP attempt, end to end (connect + send + the whole answer)"""
    budget_s: Annotated[Optional[float], Range(gt=0)] = None
    """openai: wall-clock budget in seconds of the whole stage; no retry starts after it (null: none)"""
    retries: Annotated[int, Range(ge=0)] = 4
    """extra attempts on timeouts, connection errors, 429 and 5xx (never on other 4xx)"""
    backoff_s: Annotated[float, Range(ge=0)] = 0.5
    """seconds of the first retry delay; doubles each attempt, with full jitter"""
    backoff_max_s: Annotated[float, Range(ge=0)] = 30.0
    """longest retry delay in seconds"""
    temperature: Annotated[float, Range(ge=0)] = 0.0
    """sampling temperature of the answers (0 = greedy)"""
    max_tokens: Annotated[int, Range(ge=1)] = 512
    """most tokens generated per answer"""
    cache_dir: str = "data/cache/mllm"
    """on-disk response cache ("" disables it)"""
    device: str = "auto"
    """transformers: where the model runs, auto, cpu or cuda[:i]"""
    max_pixels: Annotated[int, Range(ge=1)] = 512 * 28 * 28
    """transformers: Qwen2.5-VL image processor budget per image"""
    server_min_pixels: Annotated[int, Range(ge=1)] = 56 * 56
    """openai: the served model's image processor lower pixel bound (smart_resize min_pixels), used to map boxes back
    from the frame the model saw; default: the Qwen2/2.5-VL checkpoints' processor, 56*56"""
    server_max_pixels: Annotated[int, Range(ge=1)] = 12845056
    """openai: the served model's image processor pixel budget (smart_resize max_pixels, e.g. vLLM's
    --mm-processor-kwargs max_pixels); default: the Qwen2/2.5-VL checkpoints' processor, 12845056"""

    def __post_init__(self) -> None:
        check_fields(self)
        if self.server_max_pixels < self.server_min_pixels:
            raise ValueError(f"server_max_pixels ({self.server_max_pixels}) is below server_min_pixels "
                             f"({self.server_min_pixels})")
        if self.backoff_max_s < self.backoff_s:
            raise ValueError(f"backoff_max_s ({self.backoff_max_s}) is below backoff_s ({self.backoff_s})")
