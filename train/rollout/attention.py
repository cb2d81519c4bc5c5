"""Record where the edit target phrase looks: text→image attention maps for RC-GRPO's attention-concentration reward.

:class:`AttentionRecorder` wraps the attention processors of a FLUX or Qwen-Image transformer (no model fork): the
wrapped processor calls the original one, so outputs are bit-identical, and while a
:meth:`AttentionRecorder.recording` block is open it also captures the processor's normalised queries and keys
(forward hooks on ``norm_q``/``norm_k`` and, in the dual-stream blocks, ``norm_added_q``/``norm_added_k``), applies
the same rotary embedding (the model's own function) and computes, for the selected text-token queries only,
``softmax(q·kᵀ/√d)`` over ALL keys the model lets them see (keys masked by the model's attention mask get zero
probability). The mass that falls on the target-image tokens is summed per sample over heads, selected tokens,
layers and calls.

Sequence layout of the joint attention, text first in both families: ``[text (T) | target image (L) | condition
image (rest)]``. FLUX(-Kontext): dual-stream blocks concatenate the text queries/keys in front, single-stream blocks
get the text already in front of the hidden states. Qwen-Image(-Edit): one dual-stream processor, ``[text, image]``
with complex RoPE (separate text / image frequencies) and, when the text is padded, a joint key mask
``[text mask | all image tokens]``.

Batch rule: the transformer batch may be k × B rows for a (B, T) text-token mask; the FIRST B rows are recorded and
the rest ignored. This is true CFG's layout (Qwen-Image-Edit's ``velocity`` stacks the conditional branch first, the
negative prompt after), so the map is the conditional branch's. Any other batch size is an error.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch

# Architectures whose attention has no text→target-image part, so an attention reward cannot apply (processor name
# -> why)
NO_TEXT_TO_IMAGE_ATTENTION = {
    "QwenImage21AttnProcessor": "Qwen-Image 2.1's attention is block-causal (text tokens never attend to the target "
                                "image that follows them)",
    "QwenImage21FlexAttnProcessor": "Qwen-Image 2.1's attention is block-causal (text tokens never attend to the "
                                    "target image that follows them)",
}

# Query rows are processed in chunks so that one chunk's scores (heads × rows × keys) stay around this many floats.
SCORE_CHUNK_ELEMENTS = 1 << 24


@dataclass
class _Session:
    """One open recording: which text tokens to follow and the running sums of their target-token attention."""

    text_token_mask: torch.Tensor  # (B, T) bool
    num_target_tokens: int  # L
    sums: torch.Tensor | None = None  # (B, L) float32, created at the first recorded call (on the model's device)


class AttentionRecorder:
    """Accumulates text→target-image attention maps of a FLUX (dual- and single-stream) or Qwen-Image transformer.

    ``AttentionRecorder(transformer)`` installs the recording processors (again on an already-instrumented
    transformer it takes the existing wrappers over instead of wrapping twice); :meth:`remove` restores the original
    processors. Nothing is recorded outside ``with recorder.recording(text_token_mask, num_target_tokens):``;
    :meth:`take` returns the map accumulated since the last ``take``. Record rollout forwards (``torch.no_grad``);
    a backward inside the block with gradient checkpointing on would re-run the processors and count them again.
    """

    def __init__(self, transformer: torch.nn.Module):
        self.transformer = transformer
        self._wrapped: list[tuple[torch.nn.Module, _RecordingProcessor]] = []
        self._session: _Session | None = None
        self._pending: _Session | None = None  # closed sessions accumulate here until take()
        self.install()

    # ------------------------------------------------------------------ processors
    def install(self) -> None:
        """Wrap every attention module's processor (idempotent)."""
        wrappers = _recording_wrappers()
        modules = [m for m in self.transformer.modules() if hasattr(m, "set_processor") and hasattr(m, "processor")]
        if not modules:
            raise NotImplementedError(f"{type(self.transformer).__name__} has no diffusers attention modules: "
                                      "attention recording supports FLUX and Qwen-Image transformers only")
        for module in modules:
            current = module.processor
            if isinstance(current, _RecordingProcessor):
                if current.recorder is self:
                    continue
                current = current.inner  # another recorder's wrapper: take it over, never wrap twice
            if type(current) not in wrappers:
                reason = NO_TEXT_TO_IMAGE_ATTENTION.get(type(current).__name__)
                if reason:
                    raise NotImplementedError(f"no text→image attention to record: {reason}")
                raise NotImplementedError(
                    f"attention recording supports diffusers' {' and '.join(t.__name__ for t in wrappers)} "
                    f"(FLUX / FLUX-Kontext / FLUX.2, Qwen-Image / -Edit); {type(module).__name__} uses "
                    f"{type(current).__name__}")
        for module in modules:
            current = module.processor
            if isinstance(current, _RecordingProcessor) and current.recorder is self:
                continue
            inner = current.inner if isinstance(current, _RecordingProcessor) else current
            wrapper = wrappers[type(inner)](inner, self)
            module.set_processor(wrapper)
            self._wrapped.append((module, wrapper))

    def remove(self) -> None:
        """Put the original processors back (where this recorder's wrapper is still in place)."""
        for module, wrapper in self._wrapped:
            if module.processor is wrapper:
                module.set_processor(wrapper.inner)
        self._wrapped.clear()

    # ------------------------------------------------------------------ recording
    @contextmanager
    def recording(self, text_token_mask: torch.Tensor, num_target_tokens: int) -> Iterator[AttentionRecorder]:
        """Record every transformer call inside the block.

        ``text_token_mask``: (B, T) bool over the text sequence fed to the transformer (the tokens whose attention
        is followed, e.g. the edit target phrase); ``num_target_tokens``: L, the image tokens right after the text.
        A transformer call on k × B rows records its first B rows (true CFG: the conditional branch, stacked first).
        """
        mask = torch.as_tensor(text_token_mask)
        if mask.dim() != 2 or mask.dtype != torch.bool:
            raise ValueError(f"text_token_mask must be a (B, T) bool tensor, got {tuple(mask.shape)} {mask.dtype}")
        if int(num_target_tokens) <= 0:
            raise ValueError(f"num_target_tokens must be positive, got {num_target_tokens}")
        if self._session is not None:
            raise RuntimeError("a recording is already open on this AttentionRecorder")
        if not any(module.processor is wrapper for module, wrapper in self._wrapped):
            raise RuntimeError("this recorder was removed or taken over by another AttentionRecorder: "
                               "call install() (or use the other recorder) to record again")
        pending = self._pending
        if pending is not None and (not torch.equal(pending.text_token_mask, mask)
                                    or pending.num_target_tokens != int(num_target_tokens)):
            raise ValueError("a recording with another text_token_mask / num_target_tokens is not taken yet: "
                             "call take() before recording a new batch")
        self._session = pending or _Session(mask, int(num_target_tokens))
        try:
            yield self
        finally:
            self._pending, self._session = self._session, None

    def take(self) -> torch.Tensor:
        """The accumulated (B, L) map on the CPU, each row renormalised to sum 1 (NaN where nothing was recorded,
        e.g. a sample without selected text tokens); resets the accumulation."""
        if self._session is not None:
            raise RuntimeError("take() inside an open recording block")
        if self._pending is None:
            raise RuntimeError("nothing recorded: call the transformer inside `with recorder.recording(...)` first")
        session, self._pending = self._pending, None
        batch = session.text_token_mask.shape[0]
        sums = session.sums if session.sums is not None else torch.zeros(batch, session.num_target_tokens)
        sums = sums.detach().float().cpu()
        return sums / sums.sum(dim=1, keepdim=True)  # 0/0 -> NaN for rows that never got attention

    # ------------------------------------------------------------------ accumulation (called by the processors)
    def _recorded_rows(self, batch: int) -> int:
        """B, the rows of a k × B transformer batch that are recorded (the first block; see the module doc)."""
        rows = self._session.text_token_mask.shape[0]
        if batch % rows:
            raise ValueError(f"text_token_mask has {rows} rows but the transformer batch has {batch}: the batch "
                             f"must be the samples themselves or k stacked copies of them (true CFG: conditional "
                             f"rows first), whose first block is recorded")
        return rows

    def _accumulate(self, text_queries: torch.Tensor, keys: torch.Tensor,
                    key_mask: torch.Tensor | None = None) -> None:
        """``text_queries`` (B, T, H, D) and ``keys`` (B, S, H, D) of the recorded rows, rotary embedding applied,
        keys in sequence order ``[text | target | condition]``; ``key_mask`` (B, S) bool: keys the model attends
        to (None: all)."""
        session = self._session
        mask = session.text_token_mask.to(text_queries.device)
        batch, text_len, heads, head_dim = text_queries.shape
        target = session.num_target_tokens
        if mask.shape != (batch, text_len):
            raise ValueError(f"text_token_mask has shape {tuple(mask.shape)} but the transformer saw {batch} "
                             f"samples with {text_len} text tokens")
        if text_len + target > keys.shape[1]:
            raise ValueError(f"num_target_tokens={target} does not fit a sequence of {keys.shape[1]} tokens "
                             f"with {text_len} text tokens")
        if session.sums is None:
            session.sums = torch.zeros(batch, target, device=text_queries.device, dtype=torch.float32)
        scale = 1.0 / math.sqrt(head_dim)  # the scaled-dot-product default the processors use
        chunk = max(1, SCORE_CHUNK_ELEMENTS // (heads * keys.shape[1]))
        for sample in range(batch):
            rows = mask[sample].nonzero().squeeze(1)
            sample_keys = keys[sample].float()
            for start in range(0, rows.numel(), chunk):
                queries = text_queries[sample, rows[start:start + chunk]].float()  # (n, H, D)
                scores = torch.einsum("nhd,shd->hns", queries, sample_keys) * scale
                if key_mask is not None:  # masked keys (text padding) get zero probability, as in the model
                    scores = scores.masked_fill(~key_mask[sample].to(scores.device), float("-inf"))
                probs = scores.softmax(dim=-1)
                session.sums[sample] += probs[..., text_len:text_len + target].sum(dim=(0, 1))


def _forwarded_to_inner(name: str) -> property:
    return property(lambda self: getattr(self.inner, name), lambda self, value: setattr(self.inner, name, value))


class _RecordingProcessor:
    """Calls the wrapped FluxAttnProcessor unchanged; while recording, captures its normalised q/k on the way."""

    def __init__(self, inner, recorder: AttentionRecorder):
        self.inner = inner
        self.recorder = recorder

    # diffusers sets the attention backend / parallel config on the processor object: forward them to the inner one
    _attention_backend = _forwarded_to_inner("_attention_backend")
    _parallel_config = _forwarded_to_inner("_parallel_config")

    def _run_capturing(self, attn, names: list[str], call: Callable[[], Any]) -> tuple[Any, dict[str, torch.Tensor]]:
        """``call()`` (the inner processor) with the outputs of ``attn``'s q/k norm modules ``names`` captured."""
        missing = [name for name in names if getattr(attn, name, None) is None]
        if missing:
            raise NotImplementedError(f"attention recording captures q/k after the QK norms; this attention module "
                                      f"has none for {missing} (qk_norm=None is not supported)")
        captured: dict[str, torch.Tensor] = {}
        handles = [getattr(attn, name).register_forward_hook(_store(captured, name)) for name in names]
        try:
            output = call()
        finally:
            for handle in handles:
                handle.remove()
        return output, captured

    # Same signature as FluxAttnProcessor.__call__: FluxAttention.forward filters kwargs by inspecting it.
    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, image_rotary_emb=None):
        call = partial(self.inner, attn, hidden_states, encoder_hidden_states, attention_mask, image_rotary_emb)
        return self._record(attn, hidden_states, encoder_hidden_states, attention_mask, image_rotary_emb, call)

    def _record(self, attn, hidden_states, encoder_hidden_states, attention_mask, image_rotary_emb, call):
        if self.recorder._session is None:
            return call()
        if attention_mask is not None:
            raise NotImplementedError("attention recording with an attention_mask is not implemented for FLUX "
                                      "(the FLUX-Kontext and FLUX.2 pipelines pass none)")
        names = ["norm_q", "norm_k"] + (["norm_added_q", "norm_added_k"] if encoder_hidden_states is not None else [])
        output, captured = self._run_capturing(attn, names, call)
        with torch.no_grad():
            rows = self.recorder._recorded_rows(hidden_states.shape[0])
            captured = {name: value[:rows] for name, value in captured.items()}
            if encoder_hidden_states is not None:  # dual stream: text q/k come from the added projections
                text_queries = captured["norm_added_q"]
                keys = torch.cat([captured["norm_added_k"], captured["norm_k"]], dim=1)
            else:  # single stream: the text is already the first T tokens of the sequence
                text_len = self.recorder._session.text_token_mask.shape[1]
                text_queries, keys = captured["norm_q"][:, :text_len], captured["norm_k"]
            if image_rotary_emb is not None:
                from diffusers.models.embeddings import apply_rotary_emb

                cos, sin = image_rotary_emb
                text_len = text_queries.shape[1]
                text_queries = apply_rotary_emb(text_queries, (cos[:text_len], sin[:text_len]), sequence_dim=1)
                keys = apply_rotary_emb(keys, image_rotary_emb, sequence_dim=1)
            self.recorder._accumulate(text_queries, keys)
        return output


class _Flux2SingleRecordingProcessor(_RecordingProcessor):
    """FLUX.2's single-stream processor (Flux2ParallelSelfAttnProcessor): the text already in front of the sequence,
    called without an ``encoder_hidden_states`` argument."""

    # Same signature as Flux2ParallelSelfAttnProcessor.__call__ (its module passes these positionally)
    def __call__(self, attn, hidden_states, attention_mask=None, image_rotary_emb=None):
        call = partial(self.inner, attn, hidden_states, attention_mask, image_rotary_emb)
        return self._record(attn, hidden_states, None, attention_mask, image_rotary_emb, call)


class _QwenRecordingProcessor(_RecordingProcessor):
    """The same for QwenDoubleStreamAttnProcessor2_0: joint ``[text, image]`` attention, complex RoPE with separate
    image / text frequencies, and the text padding mask (``encoder_hidden_states_mask``) the model turns into a
    joint key mask."""

    # Same signature as QwenDoubleStreamAttnProcessor2_0.__call__: Attention.forward filters kwargs by inspecting it.
    def __call__(self, attn, hidden_states, encoder_hidden_states=None, encoder_hidden_states_mask=None,
                 attention_mask=None, image_rotary_emb=None):
        call = partial(self.inner, attn, hidden_states, encoder_hidden_states=encoder_hidden_states,
                       encoder_hidden_states_mask=encoder_hidden_states_mask, attention_mask=attention_mask,
                       image_rotary_emb=image_rotary_emb)
        if self.recorder._session is None or encoder_hidden_states is None:
            return call()  # without a text stream the processor itself raises its own error
        names = ["norm_k", "norm_added_q", "norm_added_k"]  # image queries are not needed
        output, captured = self._run_capturing(attn, names, call)
        with torch.no_grad():
            from diffusers.models.transformers.transformer_qwenimage import (
                apply_rotary_emb_qwen,
            )

            rows = self.recorder._recorded_rows(hidden_states.shape[0])
            image_k, text_q, text_k = (captured[name][:rows] for name in names)
            if image_rotary_emb is not None:
                image_freqs, text_freqs = image_rotary_emb
                image_k = apply_rotary_emb_qwen(image_k, image_freqs, use_real=False)
                text_q, text_k = (apply_rotary_emb_qwen(x, text_freqs, use_real=False) for x in (text_q, text_k))
            key_mask = None
            if encoder_hidden_states_mask is not None:  # the processor's joint mask: [text mask | all image]
                image_mask = torch.ones(rows, image_k.shape[1], dtype=torch.bool, device=image_k.device)
                key_mask = torch.cat([encoder_hidden_states_mask[:rows].bool(), image_mask], dim=1)
            self.recorder._accumulate(text_q, torch.cat([text_k, image_k], dim=1), key_mask)
        return output


def _recording_wrappers() -> dict[type, type[_RecordingProcessor]]:
    """The supported diffusers processors -> their recording wrapper."""
    from diffusers.models.transformers.transformer_flux import FluxAttnProcessor
    from diffusers.models.transformers.transformer_flux2 import Flux2AttnProcessor, Flux2ParallelSelfAttnProcessor
    from diffusers.models.transformers.transformer_qwenimage import (
        QwenDoubleStreamAttnProcessor2_0,
    )

    # FLUX.2's dual-stream processor has FLUX's layout and signature (text q/k from the added projections in front)
    return {FluxAttnProcessor: _RecordingProcessor, QwenDoubleStreamAttnProcessor2_0: _QwenRecordingProcessor,
            Flux2AttnProcessor: _RecordingProcessor, Flux2ParallelSelfAttnProcessor: _Flux2SingleRecordingProcessor}


def _store(captured: dict, name: str):
    def hook(module, inputs, output):
        captured[name] = output.detach()

    return hook
