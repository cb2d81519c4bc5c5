"""Memory plan for LoRA RL post-training of FLUX.1-Kontext-dev, Qwen-Image-Edit-2509/2511, FLUX.2 [klein] 4B / 9B,
FLUX.2 [dev] and Qwen-Image 2.1, per GPU, from the real architectures instantiated on the meta device (no weights, no
memory, exact parameter counts).

    .venv/bin/python perf/memory_plan.py                                   # prints the tables
    .venv/bin/python perf/memory_plan.py --out perf/results/memory_plan.json

The configs live in ``perf/model_configs/*.json``; each names its public source in a ``_source`` key (stripped
before instantiation). Parameter and LoRA counts are read off the meta models; everything else is the small pure
functions below, so the arithmetic is testable without any model.

Per-GPU bytes (``plan``), N GPUs, P base parameters of the trained transformer, L LoRA parameters:

* frozen base, bf16:            2·P        (DDP: replicated)     2·P/N   (FSDP2: sharded)
* LoRA + AdamW:                 16·L       fp32 master weight + fp32 grad + 2 fp32 moments (4+4+4+4 bytes);
                                           replicated under DDP, sharded (/N) under FSDP2
* DDP gradient buckets:         4·L        (N > 1: DDP keeps a flat fp32 copy of the gradients for all-reduce)
* FSDP2 all-gather buffers:     2·2·B      (N > 1: the current and the prefetched block unsharded in bf16;
                                           B = parameters of the largest block)
* text encoders, bf16:          2·T        replicated on every GPU, or 0 when offloaded to CPU / precomputed
* VAE, bf16:                    2·V        replicated (rollouts decode, training encodes)
* activations:                  see below, one micro-batch of 1 sample
* fits 80GB:                    total <= 0.9 · 80 GiB (10% kept for the CUDA context, NCCL buffers and allocator
                                fragmentation)

Activations at a resolution R (default 512): packed 2x2 latents of an 8x VAE give (R/16)² target tokens (so do
Qwen-Image 2.1's unpacked latents of its 16x VAE); the condition image adds the same again; the text adds its tokens
(512 T5 tokens for Kontext; 512 padded tokens for FLUX.2, its pipelines' max_sequence_length; for
Qwen-Image-Edit-2509/2511 the Qwen2.5-VL hidden states of the prompt with the 384² condition view: ~196 vision + ~60
instruction tokens, 256 assumed; for Qwen-Image 2.1 the instruction, ~64 tokens, its condition image being the
condition tokens already counted). With sequence S, hidden H and bf16 (2 bytes), one "unit" is S·H·2 bytes and

* without checkpointing:  Σ_blocks k_block · unit  +  (g + 1) · unit
* with checkpointing:     n_blocks · 1 · unit  (each block's input)  +  max k_block · unit  (one block recomputed
                          in backward)  +  (g + 1) · unit

k_block = number of hidden-sized tensors a block stores for backward. FLUX.2's double/single blocks and Qwen-Image
2.1's single-stream block are modelled with FLUX.1's factors (same block shapes: attention + 3x MLP; not yet
re-measured: ``perf/gpu_check.py --block-factors`` does it on a GPU). The values (FLUX double 15, FLUX single 14.1,
Qwen-Image 17) are the bytes autograd saved per block, counted with ``torch.autograd.graph.saved_tensors_hooks`` on
shrunk copies of these blocks on CPU (hidden 512-1024, same MLP ratio, SDPA attention, LoRA on), divided by
S·H·2: they include the fp32 RMSNorm/RoPE intermediates of q and k (``perf/gpu_check.py --block-factors``
re-measures them). g = 4 units of backward transients (the
gradient of the 4·H MLP activation), +1 unit for what lives outside the blocks (embeddings, output, loss).
``perf/gpu_check.py`` measures the same count and the real CUDA peak, and reports their ratio to this estimate.
"""
from __future__ import annotations

import argparse
import functools
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CONFIG_DIR = Path(__file__).resolve().parent / "model_configs"
GIB = 1024**3
BF16 = 2
LORA_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")
LORA_STATE_BYTES = 16  # fp32 weight + fp32 grad + AdamW exp_avg + exp_avg_sq
DDP_BUCKET_BYTES = 4  # fp32 gradient bucket copy
BACKWARD_TRANSIENT_UNITS = 4.0
OUTSIDE_UNITS = 1.0
HEADROOM = 0.9
GPU_COUNTS = (1, 2, 4, 8, 16)
STRATEGIES = ("ddp", "fsdp2")
TEXT_ENCODER_MODES = ("replicated", "offloaded")

# hidden-sized tensors saved per block (see the module docstring)
K_FLUX_DOUBLE = 15.0
K_FLUX_SINGLE = 14.1
K_QWEN_IMAGE = 17.0


@dataclass(frozen=True)
class Pipeline:
    """One editing model: its trained transformer, frozen text encoders and VAE, and its text sequence length."""

    name: str
    transformer: str
    text_encoders: tuple[str, ...]
    vae: str
    text_tokens: int


PIPELINES = (
    Pipeline("FLUX.1-Kontext-dev", "flux_kontext_transformer.json",
             ("t5_v1_1_xxl_encoder.json", "clip_l_text.json"), "flux_vae.json", text_tokens=512),
    Pipeline("Qwen-Image-Edit-2509", "qwen_image_edit_2509_transformer.json",
             ("qwen2_5_vl_7b_instruct.json",), "qwen_image_vae.json", text_tokens=256),
    # 2511: the 2509 architecture (its transformer adds only the zero_cond_t flag, no parameters)
    Pipeline("Qwen-Image-Edit-2511", "qwen_image_edit_2509_transformer.json",
             ("qwen2_5_vl_7b_instruct.json",), "qwen_image_vae.json", text_tokens=256),
    Pipeline("FLUX.2-klein-4B", "flux2_klein_4b_transformer.json", ("qwen3_4b.json",), "flux2_vae.json",
             text_tokens=512),
    Pipeline("FLUX.2-klein-9B", "flux2_klein_9b_transformer.json", ("qwen3_8b.json",), "flux2_vae.json",
             text_tokens=512),
    Pipeline("FLUX.2-dev", "flux2_dev_transformer.json", ("mistral_small_3_1_24b.json",), "flux2_vae.json",
             text_tokens=512),
    Pipeline("Qwen-Image-2.1", "qwen_image_21_transformer.json", ("qwen3_vl_8b_instruct.json",),
             "qwen_image_21_vae.json", text_tokens=64),
)


# ----------------------------------------------------------------------------------------------- configs & models
def load_config(path: str | Path) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """(class name, constructor config, source note) of one ``model_configs`` JSON; ``_source`` is stripped so the
    config is exactly what the library constructor receives."""
    path = Path(path)
    if not path.is_absolute() and not path.exists():
        path = CONFIG_DIR / path
    config = json.loads(path.read_text())
    source = config.pop("_source", {})
    class_name = config.pop("_class_name")
    return class_name, config, source


def build_model(class_name: str, config: dict[str, Any], device: str = "meta"):
    """Instantiate a diffusers or transformers class from a plain config dict on ``device``. On ``meta`` no memory
    is allocated, so the 20B transformer builds in well under a second."""
    import torch

    cls = _model_class(class_name)
    with torch.device(device):
        if hasattr(cls, "from_config"):  # diffusers ModelMixin
            return cls.from_config(config)
        return cls(cls.config_class(**config))


def _model_class(class_name: str):
    import diffusers
    import transformers

    for library in (diffusers, transformers):
        if hasattr(library, class_name):
            return getattr(library, class_name)
    raise KeyError(f"{class_name} is neither a diffusers nor a transformers class")


def count_parameters(model) -> int:
    """Exact parameter count (meta tensors know their shapes)."""
    return sum(p.numel() for p in model.parameters())


def matches_target(module_name: str, targets: tuple[str, ...] = LORA_TARGETS) -> bool:
    """peft's rule for a list of target names: the full name equals a target or ends with ``.target``."""
    return any(module_name == t or module_name.endswith("." + t) for t in targets)


def lora_parameter_count(model, rank: int = 32, targets: tuple[str, ...] = LORA_TARGETS) -> int:
    """LoRA parameters peft adds: A (rank x in) + B (out x rank) for every targeted ``nn.Linear``."""
    import torch

    return sum(rank * (m.in_features + m.out_features) for name, m in model.named_modules()
               if isinstance(m, torch.nn.Linear) and matches_target(name, targets))


def largest_block_parameters(model) -> int:
    """Parameters of the largest element of any top-level ``ModuleList`` (the FSDP2 wrapping unit)."""
    import torch

    sizes = [count_parameters(block) for child in model.children() if isinstance(child, torch.nn.ModuleList)
             for block in child]
    return max(sizes, default=count_parameters(model))


def transformer_blocks(class_name: str, config: dict[str, Any]) -> list[tuple[int, float]]:
    """(number of blocks, k_block) per block type of a trained transformer."""
    if class_name == "FluxTransformer2DModel":
        return [(config["num_layers"], K_FLUX_DOUBLE), (config["num_single_layers"], K_FLUX_SINGLE)]
    if class_name == "QwenImageTransformer2DModel":
        return [(config["num_layers"], K_QWEN_IMAGE)]
    if class_name == "Flux2Transformer2DModel":  # FLUX.1's factors (same block shapes; see the module docstring)
        return [(config.get("num_layers", 8), K_FLUX_DOUBLE), (config.get("num_single_layers", 48), K_FLUX_SINGLE)]
    if class_name == "QwenImage21Transformer2DModel":  # one single-stream block type, modelled as FLUX's single
        return [(config.get("num_layers", 32), K_FLUX_SINGLE)]
    raise KeyError(f"no activation model for {class_name}")


def hidden_size(config: dict[str, Any], model=None) -> int:
    if "num_attention_heads" not in config and model is not None:  # a config of class defaults
        return int(model.inner_dim)
    return config["num_attention_heads"] * config["attention_head_dim"]


# ----------------------------------------------------------------------------------------------- pure arithmetic
def image_tokens(resolution: int, vae_factor: int = 8, patch: int = 2) -> int:
    """Tokens of one square image: latents of an 8x VAE packed 2x2 -> (R / 16)²."""
    side = resolution // (vae_factor * patch)
    return side * side


def sequence_length(resolution: int, text_tokens: int, condition_images: int = 1) -> int:
    """Target tokens + condition-image tokens + text tokens (the joint attention sequence)."""
    return image_tokens(resolution) * (1 + condition_images) + text_tokens


def activation_bytes(seq: int, hidden: int, blocks: list[tuple[int, float]], checkpointing: bool,
                     bytes_per_element: int = BF16, backward_units: float = BACKWARD_TRANSIENT_UNITS,
                     outside_units: float = OUTSIDE_UNITS) -> int:
    """Activation memory of one sample (formula in the module docstring)."""
    unit = seq * hidden * bytes_per_element
    if checkpointing:
        stored = sum(n for n, _ in blocks) + max(k for _, k in blocks)
    else:
        stored = sum(n * k for n, k in blocks)
    return int((stored + backward_units + outside_units) * unit)


def plan(*, base_params: int, lora_params: int, text_encoder_params: int, vae_params: int,
         largest_block_params: int, activations: int, gpus: int, strategy: str, text_encoders: str,
         capacity_gib: float = 80.0, headroom: float = HEADROOM) -> dict[str, Any]:
    """Per-GPU bytes of one training setting; pure arithmetic on counts (see the module docstring)."""
    if strategy not in STRATEGIES or text_encoders not in TEXT_ENCODER_MODES or gpus < 1:
        raise ValueError(f"bad setting: {strategy=}, {text_encoders=}, {gpus=}")
    shard = gpus if strategy == "fsdp2" else 1
    parts = {
        "base": base_params * BF16 // shard,
        "lora_adamw": lora_params * LORA_STATE_BYTES // shard,
        "comm_buffers": _comm_buffer_bytes(strategy, gpus, lora_params, largest_block_params),
        "text_encoders": text_encoder_params * BF16 if text_encoders == "replicated" else 0,
        "vae": vae_params * BF16,
        "activations": activations,
    }
    total = sum(parts.values())
    return {"strategy": strategy, "gpus": gpus, "text_encoders": text_encoders, "bytes": parts, "total": total,
            "fits_80gb": total <= headroom * capacity_gib * GIB}


def _comm_buffer_bytes(strategy: str, gpus: int, lora_params: int, largest_block_params: int) -> int:
    """DDP's fp32 gradient buckets, or FSDP2's two unsharded bf16 blocks; nothing on a single GPU."""
    if gpus == 1:
        return 0
    if strategy == "ddp":
        return lora_params * DDP_BUCKET_BYTES
    return 2 * largest_block_params * BF16


# ----------------------------------------------------------------------------------------------- the report
@functools.lru_cache(maxsize=None)
def describe_component(file: str, rank: int | None = None) -> dict[str, Any]:
    """Counts of one config's meta model; for a trained transformer also its LoRA and largest-block counts."""
    class_name, config, source = load_config(file)
    model = build_model(class_name, config)
    row = {"config": file, "class": class_name, "params": count_parameters(model), "source": source}
    row["bf16_bytes"] = row["params"] * BF16
    if rank is not None:
        row["lora_params"] = lora_parameter_count(model, rank)
        row["lora_targets"] = list(LORA_TARGETS)
        row["largest_block_params"] = largest_block_parameters(model)
        row["hidden"] = hidden_size(config, model)
        row["blocks"] = transformer_blocks(class_name, config)
    return row


def pipeline_report(pipe: Pipeline, resolution: int = 512, rank: int = 32,
                    gpu_counts: tuple[int, ...] = GPU_COUNTS, capacity_gib: float = 80.0) -> dict[str, Any]:
    """All components and all settings (strategy x GPUs x text encoders x checkpointing) of one pipeline."""
    transformer = describe_component(pipe.transformer, rank)
    encoders = [describe_component(f) for f in pipe.text_encoders]
    vae = describe_component(pipe.vae)
    seq = sequence_length(resolution, pipe.text_tokens)
    acts = {ckpt: activation_bytes(seq, transformer["hidden"], transformer["blocks"], ckpt) for ckpt in (True, False)}
    settings = []
    for strategy in STRATEGIES:
        for gpus in gpu_counts:
            for te in TEXT_ENCODER_MODES:
                for ckpt in (True, False):
                    row = plan(base_params=transformer["params"], lora_params=transformer["lora_params"],
                               text_encoder_params=sum(e["params"] for e in encoders), vae_params=vae["params"],
                               largest_block_params=transformer["largest_block_params"], activations=acts[ckpt],
                               gpus=gpus, strategy=strategy, text_encoders=te, capacity_gib=capacity_gib)
                    settings.append({**row, "gradient_checkpointing": ckpt})
    return {"pipeline": pipe.name, "resolution": resolution, "lora_rank": rank, "text_tokens": pipe.text_tokens,
            "image_tokens": image_tokens(resolution), "sequence": seq, "transformer": transformer,
            "text_encoders": encoders, "vae": vae, "activations": {"checkpointing": acts[True],
                                                                    "no_checkpointing": acts[False]},
            "settings": settings}


def report(resolution: int = 512, rank: int = 32, gpu_counts: tuple[int, ...] = GPU_COUNTS,
           capacity_gib: float = 80.0) -> dict[str, Any]:
    return {"assumptions": {"dtype": "bf16 base, fp32 LoRA + AdamW", "micro_batch": 1, "headroom": HEADROOM,
                            "capacity_gib": capacity_gib, "k_block": {"flux_double": K_FLUX_DOUBLE,
                                                                      "flux_single": K_FLUX_SINGLE,
                                                                      "qwen_image": K_QWEN_IMAGE},
                            "backward_units": BACKWARD_TRANSIENT_UNITS, "outside_units": OUTSIDE_UNITS},
            "pipelines": [pipeline_report(p, resolution, rank, gpu_counts, capacity_gib) for p in PIPELINES]}


def minimum_gpus(pipeline: dict[str, Any]) -> dict[str, Any] | None:
    """The cheapest fitting setting of one pipeline report: fewest GPUs, then text encoders replicated before
    offloaded, DDP before FSDP2, gradient checkpointing only when needed. ``plan_only``: more than one GPU is needed,
    which ``perf/gpu_check.py`` (one GPU) cannot measure. None when nothing fits."""
    def cost(row):
        return (row["gpus"], row["text_encoders"] != "replicated", row["strategy"] != "ddp",
                row["gradient_checkpointing"])

    fitting = sorted((row for row in pipeline["settings"] if row["fits_80gb"]), key=cost)
    if not fitting:
        return None
    best = fitting[0]
    return {"gpus": best["gpus"], "strategy": best["strategy"], "text_encoders": best["text_encoders"],
            "gradient_checkpointing": best["gradient_checkpointing"], "total": best["total"],
            "plan_only": best["gpus"] > 1}


def requirements(resolutions: tuple[int, ...] = (512, 1024), rank: int = 32,
                 gpu_counts: tuple[int, ...] = GPU_COUNTS, capacity_gib: float = 80.0) -> list[dict[str, Any]]:
    """Per pipeline and resolution, the fewest 80 GB GPUs and how they are used (:func:`minimum_gpus`)."""
    rows = []
    for resolution in resolutions:
        for p in PIPELINES:
            report_ = pipeline_report(p, resolution, rank, gpu_counts, capacity_gib)
            rows.append({"pipeline": p.name, "resolution": resolution, "minimum": minimum_gpus(report_)})
    return rows


def requirements_table(rows: list[dict[str, Any]]) -> str:
    lines = ["| pipeline | resolution | GPUs (80 GB) | how | per-GPU GiB | measured by gpu-check |",
             "|---|---:|---:|---|---:|---|"]
    for row in rows:
        best = row["minimum"]
        if best is None:
            lines.append(f"| {row['pipeline']} | {row['resolution']}² | > {max(GPU_COUNTS)} | - | - | - |")
            continue
        how = (f"{best['strategy'].upper()}, text encoders {best['text_encoders']}, "
               f"{'with' if best['gradient_checkpointing'] else 'without'} gradient checkpointing")
        lines.append(f"| {row['pipeline']} | {row['resolution']}² | {best['gpus']} | {how} | {_gib(best['total'])} "
                     f"| {'plan-only' if best['plan_only'] else 'yes (one GPU)'} |")
    return "\n".join(lines)


def _gib(n: int) -> str:
    return f"{n / GIB:.2f}"


def markdown_tables(result: dict[str, Any]) -> str:
    """The components table and one settings table per pipeline (GiB per GPU)."""
    lines = ["| pipeline | component | class | parameters | bf16 GiB |", "|---|---|---|---:|---:|"]
    for p in result["pipelines"]:
        t = p["transformer"]
        for role, row in [("transformer", t)] + [("text encoder", e) for e in p["text_encoders"]] + [("VAE", p["vae"])]:
            lines.append(f"| {p['pipeline']} | {role} | {row['class']} | {row['params']:,} "
                         f"| {_gib(row['bf16_bytes'])} |")
        lines.append(f"| {p['pipeline']} | LoRA r={p['lora_rank']} ({', '.join(t['lora_targets'])}) | - | "
                     f"{t['lora_params']:,} | fp32 + AdamW: {_gib(t['lora_params'] * LORA_STATE_BYTES)} |")
    for p in result["pipelines"]:
        a = p["activations"]
        lines += ["", f"**{p['pipeline']}** at {p['resolution']}²: sequence {p['sequence']} = "
                  f"{p['image_tokens']} target "
                  f"+ {p['image_tokens']} condition + {p['text_tokens']} text tokens; activations "
                  f"{_gib(a['checkpointing'])} GiB with gradient checkpointing, {_gib(a['no_checkpointing'])} GiB "
                  "without (micro-batch 1).", "",
                  "| strategy | GPUs | text encoders | base | LoRA+AdamW | comm buffers | text enc. | VAE "
                  "| total, ckpt | fits 80GB (ckpt) | total, no ckpt | fits 80GB (no ckpt) |",
                  "|---|---:|---|---:|---:|---:|---:|---:|---:|:---:|---:|:---:|"]
        rows = p["settings"]
        for ckpt_row, plain_row in zip(rows[0::2], rows[1::2]):
            b = ckpt_row["bytes"]
            lines.append(f"| {ckpt_row['strategy'].upper()} | {ckpt_row['gpus']} | {ckpt_row['text_encoders']} | "
                         f"{_gib(b['base'])} | {_gib(b['lora_adamw'])} | {_gib(b['comm_buffers'])} | "
                         f"{_gib(b['text_encoders'])} | {_gib(b['vae'])} | {_gib(ckpt_row['total'])} | "
                         f"{'yes' if ckpt_row['fits_80gb'] else 'no'} | {_gib(plain_row['total'])} | "
                         f"{'yes' if plain_row['fits_80gb'] else 'no'} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--resolution", type=int, default=512)
    parser.add_argument("--rank", type=int, default=32)
    parser.add_argument("--gpus", default=",".join(map(str, GPU_COUNTS)), help="comma-separated GPU counts")
    parser.add_argument("--capacity-gib", type=float, default=80.0)
    parser.add_argument("--out", default=None, help="write the full JSON here")
    parser.add_argument("--requirements", action="store_true",
                        help="print only the fewest GPUs per model at 512² and 1024² (and how)")
    parser.add_argument("--smoke", action="store_true", help="one GPU count (the script's CI check)")
    args = parser.parse_args(argv)
    if args.smoke:
        args.gpus = "1"
    if args.requirements:
        rows = requirements((512, 1024), args.rank, tuple(int(g) for g in args.gpus.split(",")), args.capacity_gib)
        print(requirements_table(rows))
        return {"requirements": rows}
    result = report(args.resolution, args.rank, tuple(int(g) for g in args.gpus.split(",")), args.capacity_gib)
    print(markdown_tables(result))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
        print(f"\nwrote {args.out}", file=sys.stderr)
    return result


if __name__ == "__main__":
    main()
