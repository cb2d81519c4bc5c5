"""FLUX.1-Kontext behind :class:`~train.adapters.base.EditModelAdapter`, on diffusers' ``FluxKontextPipeline`` parts.

Kontext conditioning: the source image is VAE-encoded and packed; its tokens are concatenated AFTER the target
tokens along the sequence, with position ids whose first coordinate is 1 (target tokens have 0); the prediction is
sliced back to the target tokens. Guidance is Kontext's distilled guidance embedding (no true CFG).
"""
from __future__ import annotations


import torch

from train.adapters.base import ADAPTERS, Conditioning, EditModelAdapter, not_loadable, uses_text_encoders


@ADAPTERS.register("flux_kontext")
class FluxKontextAdapter(EditModelAdapter):
    text_encoder_names = ("text_encoder", "text_encoder_2")  # CLIP-L, T5-XXL

    def __init__(self, config, device: torch.device, dtype: torch.dtype):
        from diffusers import FluxKontextPipeline

        try:
            pipe = FluxKontextPipeline.from_pretrained(config.path, dtype=dtype)
        except OSError as error:
            raise not_loadable("FLUX.1-Kontext", config.path, error) from error
        self._use_pipeline(config, device, dtype, pipe)

    # ------------------------------------------------------------------ latents
    def token_grid(self, height: int, width: int) -> tuple[int, int]:
        return height // (self.vae_scale * 2), width // (self.vae_scale * 2)

    phrase_fallbacks = 0  # prompts whose target phrase was not found: their whole prompt was used instead

    def phrase_token_mask(self, prompts: list[str], phrases: list, cond=None) -> torch.Tensor:  # cond: unused
        """(B, max_sequence_length) bool: the T5 tokens of each sample's phrase(s) in its prompt, tokenised exactly
        as :meth:`condition` does; a phrase not found (or truncated away) falls back to all non-padding tokens."""
        from train.rollout.phrases import phrase_char_spans, tokens_in_spans

        if len(prompts) != len(phrases):
            raise ValueError(f"{len(prompts)} prompts but {len(phrases)} phrase entries")
        encoded = self.pipe.tokenizer_2(list(prompts), padding="max_length", max_length=self.config.max_sequence_length,
                                        truncation=True, return_offsets_mapping=True, return_tensors="pt")
        masks = []
        for prompt, phrase, offsets, present in zip(prompts, phrases, encoded["offset_mapping"],
                                                    encoded["attention_mask"]):
            selected = tokens_in_spans(offsets, phrase_char_spans(prompt, phrase))
            if not selected.any():
                self.phrase_fallbacks += 1
                selected = present.bool()
            masks.append(selected)
        return torch.stack(masks)

    def _pack(self, latents: torch.Tensor) -> torch.Tensor:
        b, c, h, w = latents.shape
        return self.pipe._pack_latents(latents, b, c, h, w)

    def _unpack(self, tokens: torch.Tensor, height: int, width: int) -> torch.Tensor:
        return self.pipe._unpack_latents(tokens, height, width, self.vae_scale)

    @torch.no_grad()
    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        pixels = (images.to(self.device, self.dtype) * 2 - 1).clamp(-1, 1)
        latents = self.pipe._encode_vae_image(pixels, generator=None)  # the posterior mode: deterministic
        return self._pack(latents).float()

    def sigmas(self, num_steps: int, height: int, width: int) -> torch.Tensor:
        import numpy as np
        from diffusers.pipelines.flux.pipeline_flux import calculate_shift

        scheduler = self.pipe.scheduler
        rows, cols = self.token_grid(height, width)
        mu = calculate_shift(rows * cols, scheduler.config.get("base_image_seq_len", 256),
                             scheduler.config.get("max_image_seq_len", 4096),
                             scheduler.config.get("base_shift", 0.5), scheduler.config.get("max_shift", 1.15))
        base = np.linspace(1.0, 1 / num_steps, num_steps)
        kwargs = {"mu": mu} if scheduler.config.get("use_dynamic_shifting") else {}
        scheduler.set_timesteps(sigmas=base, device="cpu", **kwargs)
        return scheduler.sigmas.detach().to(torch.float32).cpu().clone()

    # ------------------------------------------------------------------ conditioning and forward
    @torch.no_grad()
    @uses_text_encoders
    def condition(self, prompts: list[str], source_images: torch.Tensor) -> Conditioning:
        prompt_embeds, pooled, text_ids = self.pipe.encode_prompt(
            prompt=prompts, prompt_2=None, device=self.device, max_sequence_length=self.config.max_sequence_length)
        image_tokens = self.encode_images(source_images).to(self.dtype)
        height, width = source_images.shape[-2:]
        rows, cols = self.token_grid(height, width)
        target_ids = self.pipe._prepare_latent_image_ids(1, rows, cols, self.device, self.dtype)
        image_ids = target_ids.clone()
        image_ids[..., 0] = 1  # condition tokens: first position coordinate 1
        return Conditioning(
            per_sample={"prompt_embeds": prompt_embeds, "pooled": pooled, "image_tokens": image_tokens},
            shared={"text_ids": text_ids, "img_ids": torch.cat([target_ids, image_ids], dim=0)},
        )

    def velocity(self, model, x: torch.Tensor, sigma: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        batch, target_len = x.shape[0], x.shape[1]
        hidden = torch.cat([x.to(self.dtype), cond.per_sample["image_tokens"]], dim=1)
        timestep = sigma.to(self.device, self.dtype).reshape(-1).expand(batch)
        guidance = None
        if self.transformer.config.guidance_embeds:
            guidance = torch.full((batch,), self.config.guidance_scale, device=self.device, dtype=torch.float32)
        out = model(hidden_states=hidden, timestep=timestep, guidance=guidance,
                    pooled_projections=cond.per_sample["pooled"], encoder_hidden_states=cond.per_sample["prompt_embeds"],
                    txt_ids=cond.shared["text_ids"], img_ids=cond.shared["img_ids"], return_dict=False)[0]
        return out[:, :target_len]

    @torch.no_grad()
    def decode(self, tokens: torch.Tensor, height: int, width: int) -> torch.Tensor:
        vae = self.pipe.vae
        latents = self._unpack(tokens.to(self.dtype), height, width)
        latents = latents / vae.config.scaling_factor + vae.config.shift_factor
        images = vae.decode(latents, return_dict=False)[0]
        return ((images.float() + 1) / 2).clamp(0, 1)
