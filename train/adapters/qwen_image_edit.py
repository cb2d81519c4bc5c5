"""Qwen-Image-Edit behind :class:`~train.adapters.base.EditModelAdapter`, on diffusers' ``QwenImageEditPipeline``
(or ``QwenImageEditPlusPipeline``, picked from the checkpoint's ``model_index.json``) parts.

Conditioning, as the pipeline does it: the instruction is encoded by Qwen2.5-VL together with the source image
(``pipe.encode_prompt``), giving variable-length embeddings with a text mask; the source image is VAE-encoded,
normalised with the VAE's ``latents_mean/std``, packed and concatenated AFTER the target tokens; ``img_shapes``
lists the target grid and the condition grid (RoPE). Guidance is true CFG with a negative prompt and Qwen's norm
rescale (:func:`true_cfg`), in every forward (rollout and training), when ``model.true_cfg_scale > 1``.

Unlike the pipeline, the condition image is NOT resized to ~1024²: it is encoded at the training resolution (the
target and condition grids are the same). Each prompt is encoded on its own, so a sample's conditioning does not
depend on its batch neighbours; the batch is then zero-padded to one text length with the mask marking the padding.
"""
from __future__ import annotations


import torch

from train.adapters.base import ADAPTERS, Conditioning, EditModelAdapter, load_pipeline_of, uses_text_encoders
from train.adapters.flux_kontext import FluxKontextAdapter

PIPELINES = ("QwenImageEditPipeline", "QwenImageEditPlusPipeline")


def true_cfg(cond: torch.Tensor, uncond: torch.Tensor, scale: float) -> torch.Tensor:
    """Qwen-Image's true CFG with norm rescale: ``comb = uncond + s·(cond − uncond)``, then
    ``comb·‖cond‖/‖comb‖`` with norms over the channel dim of each token (keeps the conditional prediction's
    magnitude). Computed in float32."""
    cond, uncond = cond.float(), uncond.float()
    combined = uncond + scale * (cond - uncond)
    return combined * (cond.norm(dim=-1, keepdim=True) / combined.norm(dim=-1, keepdim=True))


def load_pipeline(path: str, dtype: torch.dtype):
    """The pipeline at ``path`` (local dir or hub id), of the class its ``model_index.json`` names (Edit or
    Edit-Plus); clear errors for a missing checkpoint or another model family."""
    return load_pipeline_of(path, dtype, PIPELINES, "qwen_image_edit", "Qwen-Image-Edit")


def latent_stats(vae, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The Qwen-Image VAE's per-channel ``latents_mean`` and ``latents_std``, shaped (1, C, 1, 1, 1) like ``like``."""
    shape = (1, vae.config.z_dim, 1, 1, 1)
    mean = torch.tensor(vae.config.latents_mean).view(shape).to(like.device, like.dtype)
    std = torch.tensor(vae.config.latents_std).view(shape).to(like.device, like.dtype)
    return mean, std


def encode_frames(pipe, images: torch.Tensor, device, dtype) -> torch.Tensor:
    """Images (B, C, H, W) in [0, 1] -> packed float32 tokens through the pipeline's video-shaped VAE (one frame):
    the posterior mode, normalised ``(x − mean) / std`` by ``_encode_vae_image``."""
    pixels = (images.to(device, dtype) * 2 - 1).clamp(-1, 1).unsqueeze(2)  # (B, C, frames=1, H, W)
    latents = pipe._encode_vae_image(pixels, generator=None)
    b, c, _, h, w = latents.shape
    return pipe._pack_latents(latents, b, c, h, w).float()


def _pad(pairs: list[tuple[torch.Tensor, torch.Tensor]], length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample (1, T_i, D) embeddings and (1, T_i) masks -> (B, length, D) zero-padded and (B, length) masks."""
    embeds = torch.cat([torch.nn.functional.pad(e, (0, 0, 0, length - e.shape[1])) for e, _ in pairs])
    masks = torch.cat([torch.nn.functional.pad(m, (0, length - m.shape[1])) for _, m in pairs])
    return embeds, masks


@ADAPTERS.register("qwen_image_edit")
class QwenImageEditAdapter(EditModelAdapter):
    # The Kontext adapter's token grid (VAE scale × 2×2 patches) and dynamic-shift sigma schedule (the same
    # ``calculate_shift``), borrowed by name (not inherited, so nothing Kontext-specific leaks in).
    token_grid = FluxKontextAdapter.token_grid
    sigmas = FluxKontextAdapter.sigmas
    text_encoder_names = ("text_encoder",)  # Qwen2.5-VL

    def __init__(self, config, device: torch.device, dtype: torch.dtype):
        self._use_pipeline(config, device, dtype, load_pipeline(config.path, dtype))
        self.plus = type(self.pipe).__name__ == "QwenImageEditPlusPipeline"

    phrase_fallbacks = 0  # prompts whose target phrase was not found: their whole prompt was used instead

    def phrase_token_mask(self, prompts: list[str], phrases: list, cond: Conditioning | None = None) -> torch.Tensor:
        """(B, T) bool over the conditional text sequence of ``cond`` (what :meth:`velocity` feeds; T its padded
        length): the tokens of each sample's phrase(s) in its prompt. That sequence also holds the template and the
        source image's Qwen2.5-VL tokens, whose number depends on the image, so ``cond`` (:meth:`condition` of
        these prompts) is required. The prompt's tokens sit right before the template's closing tokens (special
        tokens split the text, so the prompt is tokenised as on its own). A phrase not found falls back to all of
        the prompt's tokens. With true CFG the transformer sees 2B rows: the first B are these."""
        from train.rollout.phrases import phrase_char_spans, tokens_in_spans

        if cond is None:
            raise NotImplementedError("Qwen-Image-Edit's phrase_token_mask needs the batch's Conditioning (cond=): "
                                      "the text sequence holds the source image's tokens before the prompt")
        text_mask = cond.per_sample["prompt_mask"]
        if not len(prompts) == len(phrases) == text_mask.shape[0]:
            raise ValueError(f"{len(prompts)} prompts, {len(phrases)} phrase entries, {text_mask.shape[0]} "
                             "conditioned samples")
        tokenizer = self.pipe.tokenizer
        closing = self.pipe.prompt_template_encode.split("{}")[1]  # "<|im_end|>\n<|im_start|>assistant\n"
        closing_length = len(tokenizer(closing, add_special_tokens=False)["input_ids"])
        mask = torch.zeros(text_mask.shape, dtype=torch.bool)
        for row, (prompt, phrase, length) in enumerate(zip(prompts, phrases, text_mask.sum(dim=1).tolist())):
            offsets = tokenizer(prompt, add_special_tokens=False, return_offsets_mapping=True,
                                return_tensors="pt")["offset_mapping"][0]
            selected = tokens_in_spans(offsets, phrase_char_spans(prompt, phrase))
            if not selected.any():
                self.phrase_fallbacks += 1
                selected = torch.ones_like(selected)
            end = int(length) - closing_length
            mask[row, end - selected.numel() : end] = selected
        return mask

    # ------------------------------------------------------------------ latents
    @torch.no_grad()
    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        return encode_frames(self.pipe, images, self.device, self.dtype)

    @torch.no_grad()
    def decode(self, tokens: torch.Tensor, height: int, width: int) -> torch.Tensor:
        latents = self.pipe._unpack_latents(tokens.to(self.dtype), height, width, self.vae_scale)
        mean, std = latent_stats(self.pipe.vae, latents)
        latents = latents / (1.0 / std) + mean  # written as the pipeline writes it: identical rounding
        images = self.pipe.vae.decode(latents, return_dict=False)[0][:, :, 0]
        return (images.float() / 2 + 0.5).clamp(0, 1)

    # ------------------------------------------------------------------ conditioning and forward
    def _vl_image(self, image):
        """The source image as the pipeline hands it to Qwen2.5-VL (Plus: resized to its condition area)."""
        if not self.plus:
            return image
        from diffusers.pipelines.qwenimage import pipeline_qwenimage_edit_plus as plus

        width, height = plus.calculate_dimensions(plus.CONDITION_IMAGE_SIZE, image.width / image.height)[:2]
        return [self.pipe.image_processor.resize(image, height, width)]

    def _encode_prompt(self, prompt: str, vl_image) -> tuple[torch.Tensor, torch.Tensor]:
        embeds, mask = self.pipe.encode_prompt(prompt=[prompt], image=vl_image, device=self.device)
        if mask is None:  # the pipeline drops an all-ones mask
            mask = torch.ones(embeds.shape[:2], dtype=torch.long, device=embeds.device)
        return embeds.to(self.dtype), mask

    @torch.no_grad()
    @uses_text_encoders
    def condition(self, prompts: list[str], source_images: torch.Tensor) -> Conditioning:
        from PIL import Image

        if len(prompts) != source_images.shape[0]:
            raise ValueError(f"{len(prompts)} prompts for {source_images.shape[0]} source images")
        pixels = (source_images.detach().float().clamp(0, 1) * 255).round().to(torch.uint8)
        vl_images = [self._vl_image(Image.fromarray(p.permute(1, 2, 0).cpu().numpy())) for p in pixels]
        encoded = {"prompt": [self._encode_prompt(p, image) for p, image in zip(prompts, vl_images)]}
        if self.config.true_cfg_scale > 1:
            encoded["negative"] = [self._encode_prompt(self.config.negative_prompt, image) for image in vl_images]
        # one text length for positive and negative: velocity() runs both in one forward
        length = max(embeds.shape[1] for pairs in encoded.values() for embeds, _ in pairs)
        per_sample = {"image_tokens": self.encode_images(source_images).to(self.dtype)}
        for name, pairs in encoded.items():
            per_sample[f"{name}_embeds"], per_sample[f"{name}_mask"] = _pad(pairs, length)
        grid = (1, *self.token_grid(*source_images.shape[-2:]))
        return Conditioning(per_sample=per_sample, shared={"img_shapes": [grid, grid]})  # target, condition

    def velocity(self, model, x: torch.Tensor, sigma: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        batch, target_len = x.shape[0], x.shape[1]
        target_shape, condition_shape = cond.shared["img_shapes"]
        if target_len != target_shape[1] * target_shape[2]:
            raise ValueError(f"{target_len} target tokens, but the conditioning was built for a "
                             f"{target_shape[1]}x{target_shape[2]} grid (train at the source images' size)")
        embeds, mask = cond.per_sample["prompt_embeds"], cond.per_sample["prompt_mask"]
        guided = "negative_embeds" in cond.per_sample
        copies = 2 if guided else 1
        if guided:  # conditional and unconditional branches in one forward (same text length by construction)
            embeds = torch.cat([embeds, cond.per_sample["negative_embeds"]])
            mask = torch.cat([mask, cond.per_sample["negative_mask"]])
        hidden = torch.cat([x.to(self.dtype), cond.per_sample["image_tokens"]], dim=1).repeat(copies, 1, 1)
        timestep = sigma.to(self.device, self.dtype).reshape(-1).expand(batch).repeat(copies)
        guidance = None
        if self.transformer.config.guidance_embeds:
            guidance = torch.full((batch * copies,), self.config.guidance_scale, device=self.device)
        out = model(hidden_states=hidden, timestep=timestep, guidance=guidance, encoder_hidden_states=embeds,
                    # the transformer derives the text lengths (txt_seq_lens) and the attention mask from it; no
                    # mask without padding: the pipeline passes None then, and attention stays unmasked (faster)
                    encoder_hidden_states_mask=None if bool(mask.all()) else mask,
                    img_shapes=[[target_shape, condition_shape]] * (batch * copies), return_dict=False)[0]
        out = out[:, :target_len]
        if not guided:
            return out
        return true_cfg(out[:batch], out[batch:], self.config.true_cfg_scale)
