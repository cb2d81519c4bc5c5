"""The model-adapter interface: everything the trainer needs from an editing model, nothing more.

Latents travel as *packed tokens* ``(B, L, C)``: the trainer's samplers, losses and region masks never see the
model's own layout. An adapter maps images to tokens (VAE + packing), builds the conditioning (prompt embeddings,
condition-image tokens, position ids), predicts the velocity for target tokens, and decodes tokens back to pixels.
A new model family (e.g. Qwen-Image-Edit) implements this class and registers itself in :data:`ADAPTERS` with
``@ADAPTERS.register("name")`` (docs/extending.md).
"""
from __future__ import annotations

import functools
from abc import ABC, abstractmethod
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

from editkit.registry import Registry, subclass_of

# model.adapter -> adapter class; the built-ins register themselves when their module is imported (on first lookup)
ADAPTERS: Registry[Callable[..., "EditModelAdapter"]] = Registry("model adapter (model.adapter)", lazy={
    "flux_kontext": "train.adapters.flux_kontext", "qwen_image_edit": "train.adapters.qwen_image_edit",
    "flux2": "train.adapters.flux2", "qwen_image_21": "train.adapters.qwen_image_21"},
    check=subclass_of(lambda: EditModelAdapter))


def build_adapter(config, device: torch.device, dtype: torch.dtype) -> "EditModelAdapter":
    return ADAPTERS.get(config.adapter)(config, device=device, dtype=dtype)


def not_loadable(family: str, path: str, error: Exception) -> RuntimeError:
    """The error for a checkpoint that is missing or unreadable (nothing is downloaded)."""
    return RuntimeError(f"cannot load {family} from {path!r}: {error}. No weights can be downloaded here; point "
                        "model.path at a local copy.")


def load_pipeline_of(path: str, dtype: torch.dtype, pipelines, adapter: str, family: str):
    """The diffusers pipeline at ``path`` (local dir or hub id), of the class its ``model_index.json`` names, which
    must be one of ``pipelines``; clear errors for a missing checkpoint or another model family."""
    import diffusers

    try:
        name = diffusers.DiffusionPipeline.load_config(path)["_class_name"]
    except (OSError, ValueError) as error:
        raise not_loadable(family, path, error) from error
    if name not in pipelines:
        raise ValueError(f"{path!r} holds a {name}; the {adapter} adapter supports {', '.join(pipelines)}")
    try:
        return getattr(diffusers, name).from_pretrained(path, dtype=dtype)
    except OSError as error:
        raise not_loadable(family, path, error) from error


@dataclass
class Conditioning:
    """Per-sample tensors (first dim = batch) plus tensors shared by the batch (position ids, ...)."""

    per_sample: dict[str, torch.Tensor]
    shared: dict[str, Any] = field(default_factory=dict)

    def select(self, index: torch.Tensor | slice) -> "Conditioning":
        return Conditioning({k: v[index] for k, v in self.per_sample.items()}, self.shared)

    def repeat(self, times: int) -> "Conditioning":
        """Each sample repeated ``times`` in a row (a prompt -> its group)."""
        return Conditioning({k: v.repeat_interleave(times, dim=0) for k, v in self.per_sample.items()}, self.shared)

    def to(self, device) -> "Conditioning":
        return Conditioning({k: v.to(device) for k, v in self.per_sample.items()}, self.shared)


def uses_text_encoders(method):
    """Decorates a method that runs the prompt encoders: with ``model.offload_text_encoders`` they are brought to
    the device for the call and sent back to CPU memory after it."""

    @functools.wraps(method)
    def wrapped(self, *args, **kwargs):
        with self.text_encoders_on_device():
            return method(self, *args, **kwargs)

    return wrapped


def region_grid_weights(adapter, masks: torch.Tensor, height: int, width: int, config) -> tuple[torch.Tensor,
                                                                                           torch.Tensor]:
    """The region regularizer's (background, edit) weights for pixel edit masks (N, H, W) on ``adapter``'s grid.

    ``config.grid == "latent"`` is CoCoEdit's per-latent-pixel weighting where a token packs 2×2 latent pixels
    (FLUX.1/FLUX.2, Qwen-Image-Edit: ``latent_patch = 2``); where a token IS one latent pixel (Qwen-Image 2.1:
    ``latent_patch = 1``) the latent grid is the token grid. ``"token"``: weights per packed token."""
    from train.algorithms.regularizer import latent_region_weights, region_weights
    from train.algorithms.region_advantages import token_mask

    if config.grid not in ("latent", "token"):
        raise ValueError(f"objective.regularizer.grid must be 'latent' or 'token', got {config.grid!r}")
    rows, cols = adapter.token_grid(height, width)
    if config.grid == "latent" and adapter.latent_patch == 2:
        return latent_region_weights(masks, rows, cols, config.erode_radius, config.ring_weight)
    grid = token_mask(masks, rows, cols).view(-1, rows, cols)
    return region_weights(grid, config.erode_radius, config.ring_weight)


class EditModelAdapter(ABC):
    """One editing model behind a uniform, token-level interface."""

    transformer: torch.nn.Module  # the denoiser; LoRA is added to it, and only it is trained
    latent_patch: int = 2  # latent pixels per token side (2x2 packing); 1 where a token is one latent pixel
    text_encoder_names: tuple[str, ...] = ()  # the pipeline's frozen prompt encoders (attributes of ``self.pipe``)

    def text_encoders(self) -> list[torch.nn.Module]:
        return [getattr(self.pipe, name) for name in self.text_encoder_names]

    def _use_pipeline(self, config, device: torch.device, dtype: torch.dtype, pipe) -> None:
        """The set-up every diffusers-based adapter shares: ``pipe`` moves to ``device``, everything in it is frozen
        (only the LoRA trains), the prompt encoders are parked (``model.offload_text_encoders``), and gradient
        checkpointing is switched on where configured."""
        self.config = config
        self.device, self.dtype = device, dtype
        self.pipe = pipe.to(device)
        for module in (self.pipe.vae, *self.text_encoders(), self.pipe.transformer):
            module.requires_grad_(False)
        self.park_text_encoders()
        self.transformer = self.pipe.transformer
        if config.gradient_checkpointing:
            self.transformer.enable_gradient_checkpointing()
        self.vae_scale = self.pipe.vae_scale_factor

    def park_text_encoders(self) -> None:
        """With ``model.offload_text_encoders``: the prompt encoders live in CPU memory between encodings (the
        prompt embeddings of a step are computed once, so they are needed once per step)."""
        if getattr(self.config, "offload_text_encoders", False):
            for module in self.text_encoders():
                module.to("cpu")

    @contextmanager
    def text_encoders_on_device(self) -> Iterator[None]:
        if not getattr(self.config, "offload_text_encoders", False):
            yield
            return
        for module in self.text_encoders():
            module.to(self.device)
        try:
            yield
        finally:
            self.park_text_encoders()

    # ------------------------------------------------------------------ LoRA (diffusers' format, model-agnostic)
    def add_lora(self, lora_config) -> None:
        """A peft LoRA on the transformer (Gaussian init of A, zero B); its weights train in float32."""
        from peft import LoraConfig

        self.transformer.add_adapter(LoraConfig(r=lora_config.rank, lora_alpha=lora_config.alpha,
                                                lora_dropout=lora_config.dropout, init_lora_weights="gaussian",
                                                target_modules=list(lora_config.target_modules)))
        for parameter in self.transformer.parameters():  # LoRA weights train in fp32 even with a bf16 base
            if parameter.requires_grad:
                parameter.data = parameter.data.float()
        if lora_config.init_from:
            self.load_lora(Path(lora_config.init_from))

    @abstractmethod
    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """Images (B, 3, H, W) in [0, 1] -> clean packed latent tokens (B, L, C)."""

    @abstractmethod
    def condition(self, prompts: list[str], source_images: torch.Tensor) -> Conditioning:
        """Prompt embeddings and the condition image's tokens for a batch of edits."""

    def noise(self, batch: int, height: int, width: int, generator: torch.Generator) -> torch.Tensor:
        """Initial noise as packed tokens (B, L, C), float32: standard Gaussian over the token grid and the
        transformer's input channels."""
        rows, cols = self.token_grid(height, width)
        channels = self.transformer.config.in_channels
        return torch.randn(batch, rows * cols, channels, generator=generator).to(self.device)

    @abstractmethod
    def sigmas(self, num_steps: int, height: int, width: int) -> torch.Tensor:
        """The sampling schedule: ``num_steps + 1`` sigmas from 1 down to 0 (float32, CPU)."""

    @abstractmethod
    def velocity(self, model: torch.nn.Module, x: torch.Tensor, sigma: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        """Predicted velocity for the target tokens (B, L, C); ``model`` is the (possibly DDP-wrapped) transformer."""

    @abstractmethod
    def decode(self, tokens: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """Packed tokens -> images (B, 3, H, W) in [0, 1], float32."""

    @abstractmethod
    def token_grid(self, height: int, width: int) -> tuple[int, int]:
        """(rows, cols) of the packed-token grid; region masks are pooled to it."""

    def phrase_token_mask(self, prompts: list[str], phrases: list, cond: Conditioning | None = None) -> torch.Tensor:
        """(B, T) bool over the text sequence the transformer sees: the tokens of each sample's target phrase(s)
        (a string or a list of strings per prompt), for attention recording."""
        raise NotImplementedError(f"{type(self).__name__} does not implement phrase_token_mask "
                                  "(needed by the attention_concentration reward)")

    def save_lora(self, directory: Path, state: dict[str, torch.Tensor] | None = None) -> None:
        """Save the LoRA so the model's own pipeline loads it with ``load_lora_weights``. ``state``: the trainable
        parameters as full tensors by name (:func:`train.parallel.full_lora_state`; required when the transformer
        is sharded), else read from the transformer."""
        from peft.utils import get_peft_model_state_dict

        type(self.pipe).save_lora_weights(str(directory), transformer_lora_layers=get_peft_model_state_dict(
            self.transformer, state_dict=state))

    def load_lora(self, directory: Path) -> None:
        """Load a LoRA saved by :meth:`save_lora` into the trained transformer (exact values)."""
        from peft.utils import set_peft_model_state_dict
        from safetensors.torch import load_file

        state = load_file(str(Path(directory) / "pytorch_lora_weights.safetensors"))
        state = {k.removeprefix("transformer."): v for k, v in state.items()}
        result = set_peft_model_state_dict(self.transformer, state)
        if getattr(result, "unexpected_keys", None):
            raise ValueError(f"LoRA in {directory} does not fit this model: unexpected {result.unexpected_keys[:5]}")

    @contextmanager
    def reference(self) -> Iterator[None]:
        """The reference policy = the base model: LoRA disabled inside the block."""
        self.transformer.disable_adapters()
        try:
            yield
        finally:
            self.transformer.enable_adapters()
