"""Client settings: one dataclass shared by every user of the MLLM client (rewrite, judge, rewards).

A ``params.yaml`` section that configures a client lists these keys (plus its own, e.g. ``prompt_version``).
The API key itself is never a parameter: ``api_key_env`` names the environment variable that holds it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Optional

from editkit.config_meta import Help, Range, check_fields


@dataclass
class ClientConfig:
    backend: Annotated[
        str,
        Help("the MLLM backend: none, openai or transformers (a key of editkit.mllm.backends.BACKENDS)"),
    ] = "none"
    model: Annotated[
        str,
        Help("hub id or local path (transformers); served model name (openai; \"\" = the only one served)"),
    ] = ""
    endpoint: Annotated[str, Help("OpenAI-compatible base URL, e.g. http://127.0.0.1:8000/v1 (vLLM, SGLang)")] = ""
    api_key_env: Annotated[
        str,
        Help("NAME of the env var holding the API key (\"\" = no key); the key is never logged or cached"),
    ] = ""
    allow_private_endpoint: Annotated[
        bool,
        Help("openai: allow an endpoint host on a private or link-local address (loopback always is; a cloud "
             "metadata service never is)"),
    ] = False
    max_concurrency: Annotated[
        int,
        Help("openai: requests in flight; transformers: generation batch size"),
        Range(ge=1),
    ] = 8
    timeout_s: Annotated[
        float,
        Help("seconds per HTTP attempt, end to end (connect + send + the whole answer)"),
        Range(gt=0),
    ] = 120.0
    budget_s: Annotated[
        Optional[float],
        Help("openai: wall-clock budget in seconds of the whole stage; no retry starts after it (null: none)"),
        Range(gt=0),
    ] = None
    retries: Annotated[
        int,
        Help("extra attempts on timeouts, connection errors, 429 and 5xx (never on other 4xx)"),
        Range(ge=0),
    ] = 4
    backoff_s: Annotated[
        float,
        Help("seconds of the first retry delay; doubles each attempt, with full jitter"),
        Range(ge=0),
    ] = 0.5
    backoff_max_s: Annotated[float, Help("longest retry delay in seconds"), Range(ge=0)] = 30.0
    temperature: Annotated[float, Help("sampling temperature of the answers (0 = greedy)"), Range(ge=0)] = 0.0
    max_tokens: Annotated[int, Help("most tokens generated per answer"), Range(ge=1)] = 512
    cache_dir: Annotated[str, Help("on-disk response cache (\"\" disables it)")] = "data/cache/mllm"
    device: Annotated[str, Help("transformers: where the model runs, auto, cpu or cuda[:i]")] = "auto"
    max_pixels: Annotated[
        int,
        Help("transformers: Qwen2.5-VL image processor budget per image"),
        Range(ge=1),
    ] = 512 * 28 * 28
    server_min_pixels: Annotated[
        int,
        Help("openai: the served model's image processor lower pixel bound (smart_resize min_pixels), used to map "
             "boxes back from the frame the model saw; default: the Qwen2/2.5-VL checkpoints' processor, 56*56"),
        Range(ge=1),
    ] = 56 * 56
    server_max_pixels: Annotated[
        int,
        Help("openai: the served model's image processor pixel budget (smart_resize max_pixels, e.g. vLLM's "
             "--mm-processor-kwargs max_pixels); default: the Qwen2/2.5-VL checkpoints' processor, 12845056"),
        Range(ge=1),
    ] = 12845056

    def __post_init__(self) -> None:
        check_fields(self)
        if self.server_max_pixels < self.server_min_pixels:
            raise ValueError(f"server_max_pixels ({self.server_max_pixels}) is below server_min_pixels "
                             f"({self.server_min_pixels})")
        if self.backoff_max_s < self.backoff_s:
            raise ValueError(f"backoff_max_s ({self.backoff_max_s}) is below backoff_s ({self.backoff_s})")
