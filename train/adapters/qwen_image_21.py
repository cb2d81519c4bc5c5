"""Qwen-Image 2.1 behind :class:`~train.adapters.base.EditModelAdapter`, on diffusers' ``QwenImage21Pipeline`` parts.

Conditioning, as the pipeline does it: the instruction and the source image(s) are encoded together by Qwen3-VL
(``pipe.encode_prompt``: the image's ``<|image_pad|>`` slots sit before the prompt text, one slot per 2×2 latent
tokens); each source image is made RGBA (opaque), VAE-encoded (posterior mode, normalised with ``latents_mean/std``)
and flattened to tokens (2.1 has no 2×2 packing: one token per latent pixel of 16×16 image pixels). The transformer
drops the condition tokens into the image slots of the text sequence and appends the target tokens; ``img_shapes``
lists the condition grids, then the target grid; the prediction is the last ``L`` tokens. Guidance: plain true CFG
(``model.true_cfg_scale > 1``, negative prompt ``model.negative_prompt``); Qwen-Image 2.1 is meant to be sampled
without it (scale 1).

Batching: the transformer places the target after the (padded) text and gives every position a RoPE frame index, so
text padding would shift the target's positions. :meth:`QwenImage21Adapter.velocity` therefore runs each text length
in its own forward, unpadded — a sample's velocity never depends on its batch neighbours, and a batch of one equals
the pipeline. The pipeline's reference-token KV cache is not used (training needs the gradient through every call).

The attention-concentration reward is not available: the attention is block-causal, so text tokens never attend to
the target image (there is no text→image map to record).
"""
from __future__ import annotations

import torch

from train.adapters.base import ADAPTERS, Conditioning, EditModelAdapter, load_pipeline_of, uses_text_encoders
from train.adapters.qwen_image_edit import encode_frames, latent_stats

PIPELINE = "QwenImage21Pipeline"
SLOT_TOKENS = 4  # one vision slot of the text sequence = 2x2 latent tokens


def load_pipeline(path: str, dtype: torch.dtype):
    return load_pipeline_of(path, dtype, (PIPELINE,), "qwen_image_21", "Qwen-Image 2.1")


@ADAPTERS.register("qwen_image_21")
class QwenImage21Adapter(EditModelAdapter):
    text_encoder_names = ("text_encoder",)  # Qwen3-VL
    latent_patch = 1  # tokens are latent pixels (no 2x2 packing)

    def __init__(self, config, device: torch.device, dtype: torch.dtype):
        self._use_pipeline(config, device, dtype, load_pipeline(config.path, dtype))  # vae_scale: 16

    def phrase_token_mask(self, prompts: list[str], phrases: list, cond=None) -> torch.Tensor:
        raise NotImplementedError("Qwen-Image 2.1 has no text→image attention to record: its attention is "
                                  "block-causal (text tokens never attend to the target image), so the "
                                  "attention_concentration reward does not apply to it")

    # ------------------------------------------------------------------ latents
    def token_grid(self, height: int, width: int) -> tuple[int, int]:
        multiple = self.vae_scale * 2
        if height % multiple or width % multiple:
            raise ValueError(f"Qwen-Image 2.1 needs image sides divisible by {multiple} (one text-encoder vision slot "
                             f"per {multiple} px), got {height}x{width}: set data.resolution to multiples of "
                             f"{multiple}")
        return height // self.vae_scale, width // self.vae_scale

    @torch.no_grad()
    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """RGB images in [0, 1] -> tokens: opaque RGBA (the VAE reads four channels), as the pipeline's RGBA
        conversion of an RGB image."""
        self.token_grid(*images.shape[-2:])
        rgba = torch.cat([images, torch.ones_like(images[:, :1])], dim=1)
        return encode_frames(self.pipe, rgba, self.device, self.dtype)

    @torch.no_grad()
    def decode(self, tokens: torch.Tensor, height: int, width: int) -> torch.Tensor:
        latents = self.pipe._unpack_latents(tokens.to(self.dtype), height, width, self.vae_scale)
        mean, std = latent_stats(self.pipe.vae, latents)
        images = self.pipe.vae.decode(latents * std + mean, return_dict=False)[0][:, :3, 0]  # RGB of RGBA
        return (images.float() / 2 + 0.5).clamp(0, 1)

    def sigmas(self, num_steps: int, height: int, width: int) -> torch.Tensor:
        """The pipeline's schedule: its configured ``sample_sigmas`` when they have ``num_steps`` entries, else
        ``linspace(1, 1/n, n)``; shifted by the scheduler with the image-size ``mu``."""
        sample = self.pipe.config.get("sample_sigmas")
        if sample is not None and len(sample) == num_steps:
            return self._scheduled(list(sample), height, width)
        import numpy as np

        return self._scheduled(np.linspace(1.0, 1 / num_steps, num_steps), height, width)

    def _scheduled(self, base, height: int, width: int) -> torch.Tensor:
        from diffusers.pipelines.qwenimage21.pipeline_qwenimage21 import calculate_shift

        scheduler = self.pipe.scheduler
        rows, cols = self.token_grid(height, width)
        mu = calculate_shift(rows * cols, scheduler.config.get("base_image_seq_len", 256),
                             scheduler.config.get("max_image_seq_len", 4096),
                             scheduler.config.get("base_shift", 0.5), scheduler.config.get("max_shift", 1.15))
        scheduler.set_timesteps(sigmas=base, device="cpu", mu=mu)
        return scheduler.sigmas.detach().to(torch.float32).cpu().clone()

    # ------------------------------------------------------------------ conditioning and forward
    def _encode(self, prompt: str, images: list) -> tuple[torch.Tensor, torch.Tensor]:
        embeds, _, slots = self.pipe.encode_prompt(prompt=[prompt], image=images, device=self.device)
        return embeds[0].to(self.dtype), slots[0].bool()

    @torch.no_grad()
    @uses_text_encoders
    def condition(self, prompts: list[str], source_images: torch.Tensor | list[torch.Tensor]) -> Conditioning:
        """``source_images``: (B, 3, H, W), or a list of such batches (several condition images per sample)."""
        from PIL import Image

        references = list(source_images) if isinstance(source_images, (list, tuple)) else [source_images]
        if not references or any(r.shape[0] != len(prompts) for r in references):
            raise ValueError(f"{len(prompts)} prompts, condition batches of {[r.shape[0] for r in references]}")
        shapes = [self.token_grid(*r.shape[-2:]) for r in references]

        def pil(image: torch.Tensor):
            array = (image.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
            return Image.fromarray(array).convert("RGBA")  # as the pipeline converts its condition images

        encoded: dict[str, list] = {"prompt": [], "negative": []}
        guided = self.config.true_cfg_scale > 1
        for row, prompt in enumerate(prompts):
            images = [pil(r[row]) for r in references]
            encoded["prompt"].append(self._encode(prompt, images))
            if guided:
                encoded["negative"].append(self._encode(self.config.negative_prompt, images))
        per_sample = {"image_tokens": torch.cat([self.encode_images(r).to(self.dtype) for r in references], dim=1)}
        for name, pairs in encoded.items():
            if not pairs:
                continue
            length = max(embeds.shape[0] for embeds, _ in pairs)
            per_sample[f"{name}_embeds"] = torch.stack([torch.nn.functional.pad(e, (0, 0, 0, length - e.shape[0]))
                                                        for e, _ in pairs])
            per_sample[f"{name}_slots"] = torch.stack([torch.nn.functional.pad(s, (0, length - s.shape[0]))
                                                       for _, s in pairs])
            per_sample[f"{name}_length"] = torch.tensor([e.shape[0] for e, _ in pairs], device=self.device)
        return Conditioning(per_sample=per_sample, shared={"condition_shapes": shapes})

    def _forward(self, model, hidden: torch.Tensor, timestep: torch.Tensor, embeds: torch.Tensor,
                 slots: torch.Tensor, lengths: torch.Tensor, img_shapes: list, target_len: int) -> torch.Tensor:
        """One transformer call per text length (unpadded), rows put back in order."""
        out = torch.empty(hidden.shape[0], target_len, self.transformer.config.out_channels, device=hidden.device,
                          dtype=hidden.dtype)
        for length in sorted(set(lengths.tolist())):
            rows = (lengths == length).nonzero().squeeze(1)
            row_slots = slots[rows, :length]
            if not bool((row_slots == row_slots[:1]).all()):
                raise ValueError("condition images of one batch must have the same sizes (their vision slots differ)")
            img_mask = torch.cat([row_slots, row_slots.new_ones(len(rows), target_len // SLOT_TOKENS)], dim=1)
            out[rows] = model(hidden_states=hidden[rows], timestep=timestep[rows],
                              encoder_hidden_states=embeds[rows, :length], encoder_hidden_states_mask=None,
                              img_shapes=[img_shapes] * len(rows), img_mask=img_mask,
                              return_dict=False)[0][:, -target_len:].to(out.dtype)
        return out

    def velocity(self, model, x: torch.Tensor, sigma: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        batch, target_len = x.shape[0], x.shape[1]
        rows, cols = cond.shared["condition_shapes"][0]
        if rows * cols != target_len:
            raise ValueError(f"{target_len} target tokens, but the first condition image is a {rows}x{cols} grid: "
                             "roll out at the source images' size")
        img_shapes = [(1, r, c) for r, c in cond.shared["condition_shapes"]] + [(1, rows, cols)]
        hidden = torch.cat([cond.per_sample["image_tokens"], x.to(self.dtype)], dim=1)
        timestep = sigma.to(self.device, self.dtype).reshape(-1).expand(batch)
        p = cond.per_sample
        out = self._forward(model, hidden, timestep, p["prompt_embeds"], p["prompt_slots"], p["prompt_length"],
                            img_shapes, target_len)
        if "negative_embeds" not in p:
            return out
        negative = self._forward(model, hidden, timestep, p["negative_embeds"], p["negative_slots"],
                                 p["negative_length"], img_shapes, target_len)
        positive, negative = out.float(), negative.float()
        return negative + self.config.true_cfg_scale * (positive - negative)
