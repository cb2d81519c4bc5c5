"""FLUX.2 ([klein] 4B / 9B and [dev]) behind :class:`~train.adapters.base.EditModelAdapter`, on diffusers'
``Flux2KleinPipeline`` / ``Flux2Pipeline`` parts. One adapter; the variant is read from the checkpoint's
``model_index.json`` and differs only in the text encoder and the guidance:

==========  ==============================  ====================  =========================================
variant     text encoder (hidden states)    prompt format         guidance
==========  ==============================  ====================  =========================================
klein       Qwen3 (layers 9, 18, 27)        Qwen chat template    true CFG against "" (``true_cfg_scale``),
                                                                  none for step-distilled checkpoints
dev         Mistral-3 (layers 10, 20, 30)   system message        distilled guidance embedding
                                                                  (``guidance_scale``)
==========  ==============================  ====================  =========================================

Conditioning, as the pipelines do it: each reference image is VAE-encoded (posterior mode), 2×2-patchified into the
channels, normalised with the VAE's batch-norm statistics and flattened to tokens; the reference tokens follow the
target tokens in the sequence, with 4-axis position ids ``(T, H, W, L)``: target ``T = 0``, reference ``i``
``T = 10 + 10·i``; text ids ``(0, 0, 0, l)``. The prediction is sliced back to the target tokens. Prompts are padded to
``model.max_sequence_length`` tokens and not masked (the pipelines pass no attention mask). Several reference images
per sample: pass a list of image batches to :meth:`Flux2Adapter.condition`.

Packed tokens ``(B, L, C)``: ``L = (H/16)·(W/16)`` row-major, ``C = 4·latent channels`` in the order (channel, dy, dx)
— the same 2×2 layout as FLUX.1's packing, so the region masks and CoCoEdit's latent-grid weights apply unchanged.
"""
from __future__ import annotations


import torch

from train.adapters.base import ADAPTERS, Conditioning, EditModelAdapter, load_pipeline_of, uses_text_encoders

PIPELINES = {"Flux2KleinPipeline": "klein", "Flux2Pipeline": "dev"}
TEXT_LAYERS = {"klein": (9, 18, 27), "dev": (10, 20, 30)}  # the pipelines' default text_encoder_out_layers
REFERENCE_T_SCALE = 10  # reference image i gets position T = scale + scale·i (diffusers' _prepare_image_ids)


def load_flux2(path: str, dtype: torch.dtype):
    """The FLUX.2 pipeline at ``path`` and its variant ("klein" or "dev"), with clear errors otherwise."""
    pipe = load_pipeline_of(path, dtype, PIPELINES, "flux2", "FLUX.2")
    return pipe, PIPELINES[type(pipe).__name__]


def reference_ids(shapes: list[tuple[int, int]]) -> torch.Tensor:
    """Position ids (N, 4) of reference images with token grids ``shapes`` [(rows, cols), ...], in sequence order."""
    ids = []
    for index, (rows, cols) in enumerate(shapes):
        t = torch.tensor([REFERENCE_T_SCALE + REFERENCE_T_SCALE * index])
        ids.append(torch.cartesian_prod(t, torch.arange(rows), torch.arange(cols), torch.arange(1)))
    return torch.cat(ids)


def target_ids(rows: int, cols: int) -> torch.Tensor:
    return torch.cartesian_prod(torch.arange(1), torch.arange(rows), torch.arange(cols), torch.arange(1))


@ADAPTERS.register("flux2")
class Flux2Adapter(EditModelAdapter):
    text_encoder_names = ("text_encoder",)

    def __init__(self, config, device: torch.device, dtype: torch.dtype):
        pipe, self.variant = load_flux2(config.path, dtype)
        self._use_pipeline(config, device, dtype, pipe)
        self.text_layers = TEXT_LAYERS[self.variant]

    # ------------------------------------------------------------------ guidance
    @property
    def cfg_scale(self) -> float:
        """klein's true CFG scale (1: off); [dev] and step-distilled klein checkpoints have none."""
        if self.variant != "klein" or self.pipe.config.get("is_distilled", False):
            return 1.0
        return float(self.config.true_cfg_scale)

    # ------------------------------------------------------------------ latents
    def token_grid(self, height: int, width: int) -> tuple[int, int]:
        multiple = self.vae_scale * 2
        if height % multiple or width % multiple:
            raise ValueError(f"FLUX.2 needs image sides divisible by {multiple} (VAE scale × 2×2 patches), got "
                             f"{height}x{width}: set data.resolution to multiples of {multiple}")
        return height // multiple, width // multiple

    @torch.no_grad()
    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        self.token_grid(*images.shape[-2:])
        pixels = (images.to(self.device, self.dtype) * 2 - 1).clamp(-1, 1)
        latents = self.pipe._encode_vae_image(pixels, generator=None)  # mode, 2x2 patchified, batch-norm normalised
        return self.pipe._pack_latents(latents).float()

    @torch.no_grad()
    def decode(self, tokens: torch.Tensor, height: int, width: int) -> torch.Tensor:
        rows, cols = self.token_grid(height, width)
        vae = self.pipe.vae
        latents = tokens.to(self.dtype).transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], rows, cols)
        mean = vae.bn.running_mean.view(1, -1, 1, 1).to(latents.device, latents.dtype)
        std = torch.sqrt(vae.bn.running_var.view(1, -1, 1, 1) + vae.config.batch_norm_eps).to(latents.device,
                                                                                               latents.dtype)
        latents = self.pipe._unpatchify_latents(latents * std + mean)
        images = vae.decode(latents, return_dict=False)[0]
        return ((images.float() + 1) / 2).clamp(0, 1)

    def sigmas(self, num_steps: int, height: int, width: int) -> torch.Tensor:
        import numpy as np
        from diffusers.pipelines.flux2.pipeline_flux2 import compute_empirical_mu

        scheduler = self.pipe.scheduler
        rows, cols = self.token_grid(height, width)
        base = None if scheduler.config.get("use_flow_sigmas") else np.linspace(1.0, 1 / num_steps, num_steps)
        mu = compute_empirical_mu(image_seq_len=rows * cols, num_steps=num_steps)
        if base is None:
            scheduler.set_timesteps(num_steps, device="cpu", mu=mu)
        else:
            scheduler.set_timesteps(sigmas=base, device="cpu", mu=mu)
        return scheduler.sigmas.detach().to(torch.float32).cpu().clone()

    # ------------------------------------------------------------------ conditioning and forward
    def _encode_prompts(self, prompts: list[str]) -> torch.Tensor:
        embeds, _ = self.pipe.encode_prompt(prompt=list(prompts), device=self.device,
                                            max_sequence_length=self.config.max_sequence_length,
                                            text_encoder_out_layers=self.text_layers)
        return embeds.to(self.dtype)

    @torch.no_grad()
    @uses_text_encoders
    def condition(self, prompts: list[str], source_images: torch.Tensor | list[torch.Tensor]) -> Conditioning:
        """``source_images``: one reference image per sample (B, 3, H, W), or a list of such batches (several
        reference images per sample, in order; each batch may have its own size)."""
        references = list(source_images) if isinstance(source_images, (list, tuple)) else [source_images]
        if not references or any(r.shape[0] != len(prompts) for r in references):
            raise ValueError(f"{len(prompts)} prompts, reference batches of {[r.shape[0] for r in references]}")
        tokens = [self.encode_images(r).to(self.dtype) for r in references]
        shapes = [self.token_grid(*r.shape[-2:]) for r in references]
        per_sample = {"prompt_embeds": self._encode_prompts(prompts), "image_tokens": torch.cat(tokens, dim=1)}
        if self.cfg_scale > 1:
            per_sample["negative_embeds"] = self._encode_prompts([""] * len(prompts))
        text_len = per_sample["prompt_embeds"].shape[1]
        text_ids = torch.cartesian_prod(torch.arange(1), torch.arange(1), torch.arange(1), torch.arange(text_len))
        return Conditioning(per_sample=per_sample, shared={
            "text_ids": text_ids.to(self.device), "reference_ids": reference_ids(shapes).to(self.device),
            "reference_shapes": shapes})

    def velocity(self, model, x: torch.Tensor, sigma: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        batch, target_len = x.shape[0], x.shape[1]
        rows, cols = _grid_of(target_len, cond.shared["reference_shapes"][0])
        embeds = cond.per_sample["prompt_embeds"]
        guided = "negative_embeds" in cond.per_sample
        copies = 2 if guided else 1
        if guided:  # conditional and unconditional branches in one forward (same padded text length)
            embeds = torch.cat([embeds, cond.per_sample["negative_embeds"]])
        hidden = torch.cat([x.to(self.dtype), cond.per_sample["image_tokens"]], dim=1).repeat(copies, 1, 1)
        ids = torch.cat([target_ids(rows, cols).to(self.device), cond.shared["reference_ids"]])
        timestep = sigma.to(self.device, self.dtype).reshape(-1).expand(batch).repeat(copies)
        guidance = None
        if self.transformer.config.guidance_embeds:
            guidance = torch.full((batch * copies,), self.config.guidance_scale, device=self.device,
                                  dtype=torch.float32)
        out = model(hidden_states=hidden, timestep=timestep, guidance=guidance, encoder_hidden_states=embeds,
                    txt_ids=cond.shared["text_ids"], img_ids=ids, return_dict=False)[0][:, :target_len]
        if not guided:
            return out
        positive, negative = out[:batch].float(), out[batch:].float()
        return negative + self.cfg_scale * (positive - negative)  # the pipeline's plain CFG (no rescale)

    # ------------------------------------------------------------------ attention reward
    phrase_fallbacks = 0  # prompts whose target phrase was not found: their whole prompt was used instead

    def _prompt_text(self, prompt: str) -> str:
        """The exact string the pipeline tokenises for ``prompt`` (its chat template applied)."""
        if self.variant == "klein":
            return self.pipe.tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                                           add_generation_prompt=True, enable_thinking=False)
        from diffusers.pipelines.flux2.pipeline_flux2 import format_input

        return self.pipe.tokenizer.apply_chat_template(format_input([prompt], self.pipe.system_message)[0],
                                                       tokenize=False, add_generation_prompt=False)

    def _text_tokenizer(self):
        return getattr(self.pipe.tokenizer, "tokenizer", self.pipe.tokenizer)  # [dev]: the processor's tokenizer

    def phrase_token_mask(self, prompts: list[str], phrases: list, cond=None) -> torch.Tensor:  # cond: unused
        """(B, max_sequence_length) bool over the text sequence the transformer sees: the tokens of each sample's
        phrase(s) inside its templated prompt; a phrase not found falls back to the prompt's own tokens."""
        from train.rollout.phrases import phrase_char_spans, tokens_in_spans

        if len(prompts) != len(phrases):
            raise ValueError(f"{len(prompts)} prompts but {len(phrases)} phrase entries")
        tokenizer, length = self._text_tokenizer(), self.config.max_sequence_length
        masks = []
        for prompt, phrase in zip(prompts, phrases):
            text = self._prompt_text(prompt)
            start = text.index(prompt.replace("[IMG]", "")) if prompt else 0
            encoded = tokenizer(text, padding="max_length", max_length=length, truncation=True,
                                add_special_tokens=False, return_offsets_mapping=True, return_tensors="pt")
            offsets = encoded["offset_mapping"][0]
            spans = [(a + start, b + start) for a, b in phrase_char_spans(prompt, phrase)]
            selected = tokens_in_spans(offsets, spans)
            if not selected.any():  # the prompt's own tokens; all tokens if truncation removed them too
                self.phrase_fallbacks += 1
                selected = tokens_in_spans(offsets, [(start, start + len(prompt))])
                if not selected.any():
                    selected = encoded["attention_mask"][0].bool()
            masks.append(selected)
        return torch.stack(masks)


def _grid_of(target_len: int, like: tuple[int, int]) -> tuple[int, int]:
    """The target grid: the first reference's grid when the token counts agree (training: source and target share
    the resolution), else an error naming both."""
    rows, cols = like
    if rows * cols != target_len:
        raise ValueError(f"{target_len} target tokens, but the first reference image is a {rows}x{cols} grid: "
                         "roll out at the source images' size")
    return rows, cols
