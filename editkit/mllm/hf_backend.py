"""A local or hub Qwen2.5-VL through transformers: batched generation (left padding), cuda/bf16 when available.

Log-probs come from the raw logits of each generation step (``output_logits``), i.e. the model's distribution
before any sampling warpers, which is what vLLM returns by default too (``output_scores`` would give the
temperature/top-k processed scores instead).
"""
from __future__ import annotations

import logging
from typing import Any, Iterator

from editkit.mllm.backends import Backend, MLLMError
from editkit.mllm.config import ClientConfig
from editkit.mllm.messages import ImagePart, Request, Response, TokenLogprob

log = logging.getLogger("editkit.mllm")


def pick_device(device: str) -> tuple[str, Any]:
    import torch

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    return device, dtype


def chat_conversation(request: Request) -> tuple[list[dict], list[ImagePart]]:
    """A request -> (its chat-template conversation, its images in order): text parts become text entries, image
    parts ``{"type": "image"}`` placeholders."""
    conversation, images = [], []
    for message in request.messages:
        content = []
        for part in message.content:
            if isinstance(part, str):
                content.append({"type": "text", "text": part})
            else:
                content.append({"type": "image"})
                images.append(part)
        conversation.append({"role": message.role, "content": content})
    return conversation, images


def encode_requests(processor, requests: list[Request], device) -> Any:
    """The requests' prompts (chat template with the generation prompt) and images as one padded batch on ``device``
    (left-padded where the processor's tokenizer pads left, as generation and the RRM's training need)."""
    texts, images = [], []
    for request in requests:
        conversation, request_images = chat_conversation(request)
        texts.append(processor.apply_chat_template(conversation, add_generation_prompt=True, tokenize=False))
        images += [image.to_pil() for image in request_images]
    return processor(text=texts, images=images or None, padding=True, return_tensors="pt").to(device)


class TransformersBackend(Backend):
    name = "transformers"

    def __init__(self, config: ClientConfig):
        from transformers import AutoProcessor, Qwen2_5_VLForConditionalGeneration

        super().__init__(config)
        if not config.model:
            raise MLLMError("backend transformers needs `model`: a hub id (Qwen/Qwen2.5-VL-7B-Instruct) or a local path")
        self.device, self.dtype = pick_device(config.device)
        try:
            self.processor = AutoProcessor.from_pretrained(config.model)
            self.model = Qwen2_5_VLForConditionalGeneration.from_pretrained(config.model, dtype=self.dtype)
        except OSError as error:
            raise MLLMError(f"cannot load Qwen2.5-VL from {config.model!r}: {error}") from None
        self.model.to(self.device).eval()
        self.processor.tokenizer.padding_side = "left"  # decoder-only batching: prompts end at the same column
        # Pixel budget per image (the number of vision tokens grows with it).
        size = dict(self.processor.image_processor.size)
        self.processor.image_processor.size = {**size, "longest_edge": config.max_pixels}

    def _generate_batch(self, requests: list[Request]) -> list[Response]:
        import torch

        inputs = encode_requests(self.processor, requests, self.device)
        first = requests[0]
        temperature = self.config.temperature if first.temperature is None else first.temperature
        sampling = temperature > 0
        with torch.inference_mode():
            out = self.model.generate(
                **inputs, max_new_tokens=first.max_tokens or self.config.max_tokens, do_sample=sampling,
                temperature=temperature if sampling else None, top_p=None, top_k=None,
                output_logits=bool(first.top_logprobs), return_dict_in_generate=True,
            )
        new_tokens = out.sequences[:, inputs["input_ids"].shape[1]:]
        eos = self.model.generation_config.eos_token_id
        eos_ids = set(eos if isinstance(eos, list) else [eos])
        responses = []
        for row, request in enumerate(requests):
            ids = new_tokens[row].tolist()
            stop = next((i for i, t in enumerate(ids) if t in eos_ids), None)
            kept = ids if stop is None else ids[:stop]
            text = self.processor.tokenizer.decode(kept, skip_special_tokens=True)
            logprobs = None
            if request.top_logprobs:
                logprobs = self._logprobs(out.logits, row, kept, request.top_logprobs)
            responses.append(Response(text=text, logprobs=logprobs, finish_reason="length" if stop is None else "stop"))
        return responses

    def _logprobs(self, logits: tuple, row: int, token_ids: list[int], k: int) -> list[TokenLogprob]:
        import torch

        decode = self.processor.tokenizer.decode
        result = []
        for step, token in enumerate(token_ids):
            logp = torch.log_softmax(logits[step][row].float(), dim=-1)
            top = torch.topk(logp, k)
            result.append(TokenLogprob(decode([token]), float(logp[token]),
                                       [(decode([int(i)]), float(v)) for v, i in zip(top.values, top.indices)]))
        return result

    def generate(self, requests: list[Request]) -> Iterator[tuple[int, Response]]:
        # One generate() call needs one set of generation settings: batch requests that share them.
        groups: dict[tuple, list[int]] = {}
        for index, request in enumerate(requests):
            groups.setdefault((request.max_tokens, request.temperature, request.top_logprobs), []).append(index)
        size = self.config.max_concurrency
        for indices in groups.values():
            for start in range(0, len(indices), size):
                chunk = indices[start:start + size]
                try:
                    responses = self._generate_batch([requests[i] for i in chunk])
                except Exception as error:  # one bad input must not sink the batch: retry one by one
                    if len(chunk) == 1:
                        yield chunk[0], Response(error=f"generation failed ({type(error).__name__}: {error})")
                        continue
                    log.warning("batch generation failed (%s); retrying the %d requests one by one", error, len(chunk))
                    for index in chunk:
                        yield from ((index, r) for _, r in self._one(requests[index]))
                    continue
                yield from zip(chunk, responses)

    def _one(self, request: Request) -> Iterator[tuple[int, Response]]:
        try:
            yield 0, self._generate_batch([request])[0]
        except Exception as error:
            yield 0, Response(error=f"generation failed ({type(error).__name__}: {error})")
