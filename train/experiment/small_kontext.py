"""A tiny, randomly initialised FLUX.1-Kontext pipeline built offline.

Every component of :class:`diffusers.FluxKontextPipeline` (transformer, VAE, CLIP + T5 text encoders and their
tokenizers, scheduler) is built from a small config and saved with ``save_pretrained``, so the directory loads with
``FluxKontextPipeline.from_pretrained(path)`` exactly like the real ``black-forest-labs/FLUX.1-Kontext-dev`` weights.

The VAE has ``block_out_channels=(4,)``, i.e. a VAE scale factor of 1: an ``h×w`` image gives an ``h×w`` latent and
``h/2 · w/2`` packed tokens. When calling the pipeline, pass ``height=h, width=w, max_area=h*w, _auto_resize=False``,
otherwise it resizes the condition image to Kontext's preferred ~1 MP resolutions (slow and pointless for tests).
"""
from __future__ import annotations

from pathlib import Path

# Kept small but structurally faithful: dual + single stream blocks, guidance embedding, 3-axis RoPE.
TINY_KONTEXT_DEFAULTS = dict(
    num_layers=1,
    num_single_layers=1,
    attention_head_dim=16,
    num_attention_heads=2,
    latent_channels=4,
    text_hidden=32,
)


def _clip_vocab() -> tuple[dict[str, int], list[str]]:
    """A byte-level CLIP BPE vocab: the 256 byte chars and their ``</w>`` forms, no merges."""
    # GPT-2's byte -> printable-unicode table (what CLIP's byte-level BPE works on).
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), 256))
    chars, extra = [], 0
    for byte in range(256):
        if byte in printable:
            chars.append(chr(byte))
        else:
            chars.append(chr(256 + extra))
            extra += 1
    tokens = chars + [c + "</w>" for c in chars] + ["<|startoftext|>", "<|endoftext|>"]
    return {token: index for index, token in enumerate(tokens)}, []


def _t5_vocab() -> list[tuple[str, float]]:
    """A unigram vocab: specials, then printable ASCII characters with and without the word-start marker."""
    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    printable = [chr(c) for c in range(33, 127)]
    pieces += [("\u2581" + c, -1.0) for c in printable] + [(c, -2.0) for c in printable] + [("\u2581", -3.0)]
    return pieces


def build_small_kontext(
    directory: str | Path,
    *,
    num_layers: int = TINY_KONTEXT_DEFAULTS["num_layers"],
    num_single_layers: int = TINY_KONTEXT_DEFAULTS["num_single_layers"],
    attention_head_dim: int = TINY_KONTEXT_DEFAULTS["attention_head_dim"],
    num_attention_heads: int = TINY_KONTEXT_DEFAULTS["num_attention_heads"],
    latent_channels: int = TINY_KONTEXT_DEFAULTS["latent_channels"],
    text_hidden: int = TINY_KONTEXT_DEFAULTS["text_hidden"],
    seed: int = 0,
) -> Path:
    """Build a tiny FluxKontextPipeline, save it to ``directory`` and return the path.

    Load it with ``FluxKontextPipeline.from_pretrained(path)``; call it with
    ``pipe(image=img, prompt=..., height=h, width=w, max_area=h*w, _auto_resize=False, num_inference_steps=2)``
    (``h`` and ``w`` multiples of 2; the VAE scale factor is 1).
    """
    import torch
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxKontextPipeline, FluxTransformer2DModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer, T5Config, T5EncoderModel, T5Tokenizer

    directory = Path(directory)
    torch.manual_seed(seed)
    # RoPE axes must sum to the head dim; Flux uses (16, 56, 56) for 128, keep the same proportions.
    first = attention_head_dim - 2 * ((attention_head_dim * 7 // 16) // 2 * 2)
    rope = (first, (attention_head_dim - first) // 2, (attention_head_dim - first) // 2)
    transformer = FluxTransformer2DModel(
        patch_size=1, in_channels=4 * latent_channels, out_channels=None, num_layers=num_layers,
        num_single_layers=num_single_layers, attention_head_dim=attention_head_dim,
        num_attention_heads=num_attention_heads, joint_attention_dim=text_hidden, pooled_projection_dim=text_hidden,
        guidance_embeds=True, axes_dims_rope=rope)
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",), up_block_types=("UpDecoderBlock2D",),
        block_out_channels=(4,), layers_per_block=1, latent_channels=latent_channels, norm_num_groups=1,
        use_quant_conv=False, use_post_quant_conv=False, shift_factor=0.0609, scaling_factor=1.5035)
    clip_vocab, clip_merges = _clip_vocab()
    tokenizer = CLIPTokenizer(vocab=clip_vocab, merges=clip_merges, model_max_length=77)
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(clip_vocab), hidden_size=text_hidden, intermediate_size=2 * text_hidden, num_hidden_layers=1,
        num_attention_heads=2, max_position_embeddings=77, projection_dim=text_hidden,
        bos_token_id=clip_vocab["<|startoftext|>"], eos_token_id=clip_vocab["<|endoftext|>"],
        pad_token_id=clip_vocab["<|endoftext|>"]))
    t5_vocab = _t5_vocab()
    tokenizer_2 = T5Tokenizer(vocab=t5_vocab, extra_ids=0, model_max_length=512)
    text_encoder_2 = T5EncoderModel(T5Config(
        vocab_size=len(t5_vocab), d_model=text_hidden, d_kv=8, d_ff=2 * text_hidden, num_layers=1, num_heads=2,
        relative_attention_num_buckets=8, pad_token_id=0, eos_token_id=1))
    scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0, use_dynamic_shifting=True, base_image_seq_len=256,
                                                max_image_seq_len=4096, base_shift=0.5, max_shift=1.15)
    pipe = FluxKontextPipeline(scheduler=scheduler, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer,
                               text_encoder_2=text_encoder_2, tokenizer_2=tokenizer_2, transformer=transformer)
    directory.mkdir(parents=True, exist_ok=True)
    pipe.save_pretrained(directory)
    return directory
