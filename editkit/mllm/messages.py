"""The typed message model: what goes into an MLLM (chat messages of text and images) and what comes out.

Images are normalised once, at construction, into encoded bytes (numpy arrays and PIL images become PNG; encoded
bytes are kept as they are after checking they decode), so every backend and the cache see the same bytes.
"""
from __future__ import annotations

import base64
import hashlib
import io
from dataclasses import asdict, dataclass, field
from typing import Any, Union

ROLES = ("system", "user", "assistant")


@dataclass(frozen=True)
class ImagePart:
    data: bytes  # encoded image (PNG, JPEG, WebP, ...)
    mime: str  # e.g. "image/png"

    @classmethod
    def from_any(cls, image: Any) -> "ImagePart":
        """From an HxW[x3|4] uint8 array, a PIL image, encoded bytes, or an ImagePart."""
        import numpy as np
        from PIL import Image

        if isinstance(image, ImagePart):
            return image
        if isinstance(image, (bytes, bytearray, memoryview)):
            data = bytes(image)
            try:
                with Image.open(io.BytesIO(data)) as probe:
                    fmt = probe.format
                    probe.verify()
            except Exception as error:
                raise ValueError(f"image bytes do not decode as an image ({type(error).__name__}: {error})") from None
            return cls(data, Image.MIME.get(fmt or "", "image/png"))
        if isinstance(image, np.ndarray):
            if image.dtype != np.uint8 or image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (3, 4)):
                raise ValueError(f"image array must be HxW, HxWx3 or HxWx4 uint8, got {image.shape} {image.dtype}")
            image = Image.fromarray(image)
        if isinstance(image, Image.Image):
            buffer = io.BytesIO()
            image.save(buffer, format="PNG")
            return cls(buffer.getvalue(), "image/png")
        raise TypeError(f"unsupported image type {type(image).__name__}; use a uint8 array, a PIL image or bytes")

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    def data_url(self) -> str:
        return f"data:{self.mime};base64,{base64.b64encode(self.data).decode('ascii')}"

    def to_pil(self):
        from PIL import Image

        with Image.open(io.BytesIO(self.data)) as image:
            return image.convert("RGB")


Part = Union[str, ImagePart]


@dataclass(frozen=True)
class Message:
    role: str
    content: tuple[Part, ...]

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise ValueError(f"message role must be one of {ROLES}, got {self.role!r}")

    @classmethod
    def make(cls, role: str, *parts: Any) -> "Message":
        """Text parts stay strings; anything else is converted with :meth:`ImagePart.from_any`."""
        return cls(role, tuple(p if isinstance(p, str) else ImagePart.from_any(p) for p in parts))

    @property
    def text(self) -> str:
        return "".join(p for p in self.content if isinstance(p, str))

    @property
    def images(self) -> list[ImagePart]:
        return [p for p in self.content if isinstance(p, ImagePart)]


def system(text: str) -> Message:
    return Message("system", (text,))


def user(*parts: Any) -> Message:
    return Message.make("user", *parts)


def assistant(text: str) -> Message:
    return Message("assistant", (text,))


@dataclass(frozen=True)
class Request:
    messages: tuple[Message, ...]
    max_tokens: int | None = None  # None: the client's config
    temperature: float | None = None  # None: the client's config
    top_logprobs: int = 0  # > 0: return each generated token's log-prob and the top-k alternatives
    prompt_version: str = ""  # part of the cache key: bump it when the prompt's meaning changes
    prompt_sha: str = ""  # content hash of the prompt file the request was built from (editkit.mllm.prompts)

    def __post_init__(self) -> None:
        object.__setattr__(self, "messages", tuple(self.messages))
        if not self.messages:
            raise ValueError("a request needs at least one message")

    def fingerprint(self) -> dict[str, Any]:
        """JSON-able identity of the request: images by content hash, so equal bytes give equal keys."""
        return {
            "messages": [
                {"role": m.role, "content": [p if isinstance(p, str) else {"image_sha256": p.sha256} for p in m.content]}
                for m in self.messages
            ],
            "max_tokens": self.max_tokens,
            "temperature": self.temperature,
            "top_logprobs": self.top_logprobs,
            "prompt_version": self.prompt_version,
            # only when set: requests built without a prompt file keep the keys they always had
            **({"prompt_sha": self.prompt_sha} if self.prompt_sha else {}),
        }


@dataclass
class TokenLogprob:
    token: str
    logprob: float
    top: list[tuple[str, float]] = field(default_factory=list)  # the top-k alternatives, best first


@dataclass
class Response:
    text: str | None = None
    logprobs: list[TokenLogprob] | None = None
    finish_reason: str | None = None  # "stop" | "length" | "none" (backend none) | None on error
    error: str | None = None  # set when the request failed for good (after retries); never cached
    cached: bool = False

    @property
    def ok(self) -> bool:
        return self.error is None and self.text is not None

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("cached")
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any], cached: bool = False) -> "Response":
        logprobs = data.get("logprobs")
        if logprobs is not None:
            logprobs = [TokenLogprob(t["token"], t["logprob"], [tuple(x) for x in t.get("top") or []]) for t in logprobs]
        return cls(data.get("text"), logprobs, data.get("finish_reason"), data.get("error"), cached)
