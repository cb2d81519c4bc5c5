"""GPU check of the memory plan: one LoRA training step of the full-size transformers with random weights, its peak
memory and speed, next to what ``perf/memory_plan.py`` predicts for the same setting.

    .venv/bin/python perf/gpu_check.py --out perf/results/gpu_check.json     # CUDA, < 8 min
    .venv/bin/python perf/gpu_check.py --smoke                               # CPU, shrunk configs, < 60 s

What runs, per transformer (FLUX.1-Kontext-dev, then Qwen-Image-Edit-2509 (= 2511's), FLUX.2 [klein] 4B and 9B,
Qwen-Image 2.1 and FLUX.2 [dev], each when the plan's single-GPU need fits in the free memory):

1. build on the meta device from ``perf/model_configs``, cast to bf16 there, ``to_empty(device)``, fill with random
   weights (no download: the weights are meaningless, the compute and memory are the real model's);
2. freeze the base, add LoRA r=32 on to_q/to_k/to_v/to_out.0 (fp32 adapters), AdamW on the adapters;
3. count the bytes autograd saves in one forward without checkpointing (the plan's k_block check);
4. enable gradient checkpointing; one warm-up step, then timed steps of forward + backward + AdamW at 512² with
   the condition-image tokens in the sequence (micro-batch 1); peak = ``torch.cuda.max_memory_allocated``;
5. ratio measured / predicted for the single-GPU, text-encoders-offloaded, checkpointed setting (no VAE loaded).

A grounded-masker timing follows when the project's masker imports (else it records why it was skipped).
``--smoke`` runs the same code on CPU with the dims shrunk; it reports ``"device": "cpu-smoke"`` and leaves the peak
memory unmeasured (null): nothing in its output stands for a GPU measurement. One JSON object goes to stdout (logs go
to stderr) and to ``--out``.
"""
from __future__ import annotations

import argparse
import gc
import inspect
import json
import sys
import time
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from perf import memory_plan as mp  # noqa: E402

TIME_BUDGET_S = 8 * 60
SMOKE_TIME_BUDGET_S = 60


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------------------------- configs
def shrink(class_name: str, config: dict[str, Any]) -> dict[str, Any]:
    """A shrunk copy of a transformer config for the CPU smoke run: same class and block types, tiny dims."""
    tiny = dict(config, num_layers=2, num_attention_heads=2, attention_head_dim=32, axes_dims_rope=[4, 14, 14],
                joint_attention_dim=64)
    if class_name == "FluxTransformer2DModel":
        tiny.update(num_single_layers=2, pooled_projection_dim=32)
    if class_name == "Flux2Transformer2DModel":  # four RoPE axes (T, H, W, L)
        tiny.update(num_single_layers=2, axes_dims_rope=[8, 8, 8, 8], timestep_guidance_channels=32)
    if class_name == "QwenImage21Transformer2DModel":  # its text width is context_in_dim
        del tiny["joint_attention_dim"]
        tiny.update(axes_dims_rope=[8, 12, 12], context_in_dim=64)
    return tiny


def case_settings(smoke: bool) -> dict[str, Any]:
    """Resolution and per-pipeline text tokens: the plan's 512² setting, or a shrunk one for the smoke run."""
    if smoke:
        return {"resolution": 128, "text_tokens": {p.name: 32 for p in mp.PIPELINES}}
    return {"resolution": 512, "text_tokens": {p.name: p.text_tokens for p in mp.PIPELINES}}


# ----------------------------------------------------------------------------------------------- building
def build_random(class_name: str, config: dict[str, Any], device: str, seed: int = 0):
    """meta -> bf16 on meta -> ``to_empty(device)`` -> random weights: the full-size model never exists in fp32 and
    never passes through host memory."""
    import torch

    model = mp.build_model(class_name, config, device="meta").to(torch.bfloat16)
    model = model.to_empty(device=device)
    _restore_plain_tensors(model)
    init_random_(model, seed)
    return model


def init_random_(model, seed: int = 0, std: float = 0.02) -> None:
    """Normal(0, std) matrices, zero biases, unit norm scales: random but numerically tame through 60 blocks."""
    import torch

    generator = torch.Generator(device=next(model.parameters()).device).manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim >= 2:
                p.normal_(0.0, std, generator=generator)
            elif "norm" in name and name.endswith("weight"):
                p.fill_(1.0)
            else:
                p.zero_()


def _restore_plain_tensors(model) -> None:
    """Some modules keep constant tables as plain tensor attributes (e.g. QwenEmbedRope's frequencies); built on meta
    they have no values and ``to_empty`` does not see them. Rebuild such a module on CPU from its own constructor
    arguments (stored under the same names) and copy the tables over."""
    import torch

    for module in model.modules():
        stale = [k for k, v in vars(module).items()
                 if (isinstance(v, torch.Tensor) and v.is_meta)  # a table, or a list of them (QwenImage21Rope)
                 or (isinstance(v, list) and v and all(isinstance(t, torch.Tensor) and t.is_meta for t in v))]
        if not stale:
            continue
        names = [n for n in inspect.signature(type(module).__init__).parameters if n != "self"]
        with torch.device("cpu"):
            fresh = type(module)(**{n: getattr(module, n) for n in names if hasattr(module, n)})
        for key in stale:
            setattr(module, key, getattr(fresh, key))


def add_lora(model, rank: int = 32) -> list:
    """Frozen base + peft LoRA on the plan's targets; returns the trainable (fp32) adapter parameters."""
    from peft import LoraConfig

    model.requires_grad_(False)
    model.add_adapter(LoraConfig(r=rank, lora_alpha=rank, init_lora_weights=True,
                                 target_modules=list(mp.LORA_TARGETS)))
    return [p for p in model.parameters() if p.requires_grad]


# ----------------------------------------------------------------------------------------------- inputs
def make_inputs(class_name: str, config: dict[str, Any], resolution: int, text_tokens: int, device: str):
    """Keyword inputs of one training forward (micro-batch 1): target + condition tokens, text, timestep; and the
    number of target tokens (the prediction is sliced back to them, as the pipelines do)."""
    import torch

    side = resolution // 16
    n = side * side
    dtype = torch.bfloat16
    g = torch.Generator(device="cpu").manual_seed(0)

    def randn(*shape):
        return torch.randn(*shape, generator=g).to(device=device, dtype=dtype)

    defaults = _class_defaults(class_name)
    config = {**defaults, **config}
    hidden = randn(1, 2 * n, config["in_channels"])
    timestep = torch.full((1,), 0.5, device=device)
    if class_name == "QwenImage21Transformer2DModel":
        # the condition image's tokens sit in vision slots of the text sequence (one slot per 2x2 tokens), the
        # target after it; condition tokens first in hidden_states, the prediction is the last n tokens
        slots = torch.zeros(1, text_tokens + 2 * (n // 4), dtype=torch.bool, device=device)
        slots[:, 8 : 8 + n // 4] = True  # the condition image's slots inside the text
        slots[:, text_tokens + n // 4 :] = True  # the target's slots appended after the text
        kwargs = dict(hidden_states=hidden, encoder_hidden_states=randn(1, text_tokens + n // 4,
                                                                        config["context_in_dim"]),
                      timestep=timestep, img_shapes=[[(1, side, side), (1, side, side)]], img_mask=slots)
        return kwargs, -n
    text = randn(1, text_tokens, config["joint_attention_dim"])
    if class_name == "FluxTransformer2DModel":
        rows, cols = torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij")
        ids = torch.stack([torch.zeros_like(rows), rows, cols], -1).reshape(-1, 3).float()
        cond_ids = ids.clone()
        cond_ids[:, 0] = 1  # Kontext: the condition image's first position coordinate is 1
        kwargs = dict(hidden_states=hidden, encoder_hidden_states=text,
                      pooled_projections=randn(1, config["pooled_projection_dim"]),
                      timestep=timestep, guidance=torch.full((1,), 2.5, device=device),
                      img_ids=torch.cat([ids, cond_ids]).to(device), txt_ids=torch.zeros(text_tokens, 3, device=device))
    elif class_name == "Flux2Transformer2DModel":
        grid = torch.cartesian_prod(torch.arange(1), torch.arange(side), torch.arange(side), torch.arange(1))
        cond_ids = grid.clone()
        cond_ids[:, 0] = 10  # FLUX.2: the first reference image's T coordinate
        txt_ids = torch.cartesian_prod(torch.arange(1), torch.arange(1), torch.arange(1), torch.arange(text_tokens))
        guidance = torch.full((1,), 4.0, device=device) if config.get("guidance_embeds", True) else None
        kwargs = dict(hidden_states=hidden, encoder_hidden_states=text, timestep=timestep, guidance=guidance,
                      img_ids=torch.cat([grid, cond_ids]).to(device), txt_ids=txt_ids.to(device))
    elif class_name == "QwenImageTransformer2DModel":
        kwargs = dict(hidden_states=hidden, encoder_hidden_states=text,
                      encoder_hidden_states_mask=torch.ones(1, text_tokens, dtype=torch.long, device=device),
                      timestep=timestep, img_shapes=[[(1, side, side), (1, side, side)]])
    else:
        raise KeyError(class_name)
    return kwargs, n


def _class_defaults(class_name: str) -> dict[str, Any]:
    """The constructor defaults of a model class (configs of class defaults list no keys)."""
    signature = inspect.signature(mp._model_class(class_name).__init__)
    return {k: v.default for k, v in signature.parameters.items() if v.default is not inspect.Parameter.empty}


def loss_fn(model, kwargs: dict[str, Any], target_tokens: int):
    """Flow-matching-shaped loss on the target tokens only (negative: the last |n| tokens, Qwen-Image 2.1's)."""
    out = model(**kwargs, return_dict=False)[0]
    out = out[:, target_tokens:] if target_tokens < 0 else out[:, :target_tokens]
    return (out.float() - 0.1).pow(2).mean()


# ----------------------------------------------------------------------------------------------- measuring
def saved_activation_bytes(model, kwargs: dict[str, Any], target_tokens: int) -> int:
    """Bytes autograd saves for backward in one forward (no checkpointing), each storage once, parameters excluded:
    the measured counterpart of the plan's Σ k_block units."""
    import torch

    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen: set[int] = set()
    total = 0

    def pack(t):
        nonlocal total
        storage = t.untyped_storage()
        ptr = storage.data_ptr()
        if ptr not in params and ptr not in seen:
            seen.add(ptr)
            total += storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = loss_fn(model, kwargs, target_tokens)
    del loss
    return total


def block_factors(class_name: str, heads: int = 4, layers: int = 3, resolution: int = 256,
                  text_tokens: int = 128) -> dict[str, float]:
    """k_block as measured: bytes autograd saves inside each block (first saver of a storage owns it), divided by
    S·H·2, median per block type, on a copy of the real block types with ``heads`` heads of the real head size and
    ``layers`` blocks per type, LoRA on. The plan's K_* constants are these numbers (heads 4-8 agree within 5%)."""
    import statistics

    import torch

    config_file = next(p.transformer for p in mp.PIPELINES if mp.load_config(p.transformer)[0] == class_name)
    _, config, _ = mp.load_config(config_file)
    config = dict(config, num_layers=layers, num_attention_heads=heads, joint_attention_dim=64)
    if class_name == "FluxTransformer2DModel":
        config.update(num_single_layers=layers, pooled_projection_dim=32)
    model = build_random(class_name, config, "cpu")
    add_lora(model, rank=8)
    kwargs, target_tokens = make_inputs(class_name, config, resolution, text_tokens, "cpu")
    lists = {name: child for name, child in model.named_children() if isinstance(child, torch.nn.ModuleList)}
    owner = {"name": None}
    per_block: dict[tuple[str, int], int] = {}
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen: set[int] = set()

    def pack(t):
        storage = t.untyped_storage()
        ptr = storage.data_ptr()
        if owner["name"] is not None and ptr not in params and ptr not in seen:
            seen.add(ptr)
            per_block[owner["name"]] = per_block.get(owner["name"], 0) + storage.nbytes()
        return t

    hooks = []
    for list_name, blocks in lists.items():
        for i, block in enumerate(blocks):
            hooks.append(block.register_forward_pre_hook(lambda *_, key=(list_name, i): owner.update(name=key)))
            hooks.append(block.register_forward_hook(lambda *_: owner.update(name=None)))
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = loss_fn(model, kwargs, target_tokens)
    del loss
    for hook in hooks:
        hook.remove()
    unit = (kwargs["hidden_states"].shape[1] + text_tokens) * mp.hidden_size(config) * mp.BF16
    return {name: round(statistics.median(v / unit for (n, _), v in per_block.items() if n == name), 2)
            for name in lists}


def timed_steps(model, kwargs, target_tokens: int, optimizer, steps: int, device: str) -> dict[str, Any]:
    """One warm-up step, then ``steps`` timed steps; the peak covers the timed steps (optimizer states included)."""
    import torch

    def step():
        optimizer.zero_grad(set_to_none=True)
        loss_fn(model, kwargs, target_tokens).backward()
        optimizer.step()

    step()
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if cuda:
        torch.cuda.synchronize()
    seconds = (time.perf_counter() - start) / steps
    return {"seconds_per_sample": round(seconds, 4),
            "peak_allocated_bytes": torch.cuda.max_memory_allocated() if cuda else None}


def predicted(class_name: str, config: dict[str, Any], model_params: int, lora_params: int, largest_block: int,
              seq: int) -> dict[str, Any]:
    """The plan's numbers for what the check runs: 1 GPU, no text encoders or VAE loaded, checkpointing on."""
    config = {**_class_defaults(class_name), **config}
    blocks = mp.transformer_blocks(class_name, config)
    hidden = mp.hidden_size(config)
    acts = mp.activation_bytes(seq, hidden, blocks, checkpointing=True)
    row = mp.plan(base_params=model_params, lora_params=lora_params, text_encoder_params=0, vae_params=0,
                  largest_block_params=largest_block, activations=acts, gpus=1, strategy="ddp",
                  text_encoders="offloaded")
    saved = int(sum(n * k for n, k in blocks) * seq * hidden * mp.BF16)
    return {"peak_bytes": row["total"], "parts": row["bytes"], "saved_activation_bytes_no_ckpt": saved}


def check_transformer(pipe: mp.Pipeline, smoke: bool, device: str, steps: int) -> dict[str, Any]:
    """Build, LoRA, measure and compare one pipeline's transformer."""
    import torch

    class_name, config, source = mp.load_config(pipe.transformer)
    if smoke:
        config = shrink(class_name, config)
    settings = case_settings(smoke)
    resolution, text_tokens = settings["resolution"], settings["text_tokens"][pipe.name]
    t0 = time.perf_counter()
    model = build_random(class_name, config, device)
    base_params = mp.count_parameters(model)
    largest = mp.largest_block_parameters(model)
    lora_expected = mp.lora_parameter_count(model, 32)
    trainable = add_lora(model)
    lora_params = sum(p.numel() for p in trainable)
    build_s = time.perf_counter() - t0
    kwargs, target_tokens = make_inputs(class_name, config, resolution, text_tokens, device)
    seq = kwargs["hidden_states"].shape[1] + text_tokens  # target + condition + text tokens
    saved = saved_activation_bytes(model, kwargs, target_tokens)
    model.enable_gradient_checkpointing()
    optimizer = torch.optim.AdamW(trainable, lr=1e-5)
    measured = timed_steps(model, kwargs, target_tokens, optimizer, steps, device)
    measured["adapter_tensors_with_grad"] = f"{sum(p.grad is not None for p in trainable)}/{len(trainable)}"
    expect = predicted(class_name, config, base_params, lora_params, largest, seq)
    peak = measured["peak_allocated_bytes"]
    result = {"pipeline": pipe.name, "class": class_name, "config": "shrunk" if smoke else pipe.transformer,
              "resolution": resolution, "sequence": seq, "text_tokens": text_tokens, "base_params": base_params,
              "lora_params": lora_params, "lora_params_plan": lora_expected, "build_seconds": round(build_s, 2),
              "measured": {**measured, "saved_activation_bytes_no_ckpt": saved},
              "predicted": expect,
              "ratio_peak_measured_to_predicted": round(peak / expect["peak_bytes"], 3) if peak else None,
              "ratio_saved_activations_measured_to_predicted":
                  round(saved / expect["saved_activation_bytes_no_ckpt"], 3)}
    del model, optimizer, trainable, kwargs
    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    return result


def fits_now(pipe: mp.Pipeline, device: str) -> tuple[bool, str]:
    """Whether the plan's single-GPU prediction for this transformer fits in the free device memory (with 10%)."""
    import torch

    if not device.startswith("cuda"):
        return True, ""
    row = mp.describe_component(pipe.transformer, 32)
    class_name, config, _ = mp.load_config(pipe.transformer)
    need = predicted(class_name, config, row["params"], row["lora_params"], row["largest_block_params"],
                     mp.sequence_length(512, pipe.text_tokens))["peak_bytes"]
    free, _ = torch.cuda.mem_get_info()
    return need * 1.1 <= free, f"needs ~{need / mp.GIB:.1f} GiB (+10%), {free / mp.GIB:.1f} GiB free"


# ----------------------------------------------------------------------------------------------- grounded masker
def time_masker(smoke: bool, device: str) -> dict[str, Any]:
    """Seconds per image of the project's batched grounded masker (Grounding-DINO + SAM2, random weights built from
    the real configs on CUDA, tiny ones in the smoke run). Imported lazily: if the module is not importable here,
    the result says "skipped" and why."""
    try:
        masker_module = _import_first("editkit.masks.grounded", "curate.masks.grounded")
        tiny = _import_first("editkit.tiny.grounding_dino", "curate.tiny.grounding_dino")
        tiny_sam = _import_first("editkit.tiny.sam2", "curate.tiny.sam2")
    except ImportError as err:
        return {"status": "skipped", "reason": f"masker not importable: {err}"}
    import tempfile

    import numpy as np

    n, side, batch = (2, 128, 2) if smoke else (8, 1024, 8)
    with tempfile.TemporaryDirectory() as tmp:
        if smoke:
            detector = tiny.build_tiny_grounding_dino(Path(tmp) / "gd")
            segmenter = tiny_sam.build_tiny_sam2(Path(tmp) / "sam")
        else:
            detector = tiny.build_grounding_dino_base(Path(tmp) / "gd")
            segmenter = tiny_sam.build_sam2_hiera_large(Path(tmp) / "sam")
        params = masker_module.GroundingParams(detector=str(detector), segmenter=str(segmenter), box_threshold=0.0,
                                               text_threshold=0.0, max_side=side, progress=False, batch_size=batch,
                                               device="cpu" if smoke else device)
        masker = masker_module.GroundedMasker(params)
        rng = np.random.default_rng(0)
        items = [(rng.integers(0, 256, (side * 3 // 4, side, 3), dtype=np.uint8), ["cat", "red car"]) for _ in range(n)]
        list(masker.ground(items[:batch]))  # warm-up at this shape
        _sync(device)
        start = time.perf_counter()
        list(masker.ground(items))
        _sync(device)
        seconds = time.perf_counter() - start
    models = "tiny random" if smoke else "grounding-dino-base + sam2.1-hiera-large, random"
    return {"status": "measured", "models": models,
            "images": n, "image_size": [side * 3 // 4, side], "batch_size": batch,
            "seconds_per_image": round(seconds / n, 4)}


def _import_first(*names: str):
    import importlib

    errors = []
    for name in names:
        try:
            return importlib.import_module(name)
        except ImportError as err:
            errors.append(f"{name}: {err}")
    raise ImportError("; ".join(errors))


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


# ----------------------------------------------------------------------------------------------- main
def run_sections(sections: list[tuple[str, Callable[[], dict[str, Any]]]], budget_s: float) -> dict[str, Any]:
    """Run the sections in order; one that raises or starts after the budget is recorded as such, not as passed."""
    start = time.perf_counter()
    out: dict[str, Any] = {}
    for name, fn in sections:
        elapsed = time.perf_counter() - start
        if elapsed > budget_s:
            out[name] = {"status": "skipped", "reason": f"time budget spent ({elapsed:.0f} s of {budget_s:.0f} s)"}
            continue
        log(f"[gpu_check] {name} ...")
        try:
            out[name] = fn()
        except Exception as err:  # recorded, so one failing section does not hide the others' measurements
            out[name] = {"status": "error", "reason": f"{type(err).__name__}: {err}"}
        log(f"[gpu_check] {name}: done at {time.perf_counter() - start:.1f} s")
    out["total_seconds"] = round(time.perf_counter() - start, 1)
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="CPU, shrunk configs, same code path (< 60 s)")
    parser.add_argument("--steps", type=int, default=2, help="timed training steps per transformer")
    parser.add_argument("--no-masker", action="store_true", help="skip the grounded-masker timing")
    parser.add_argument("--block-factors", action="store_true",
                        help="only measure k_block (saved hidden-sized tensors per block) on CPU and print them")
    parser.add_argument("--out", default=None, help="also write the JSON here")
    args = parser.parse_args(argv)

    import torch

    if args.block_factors:
        factors = {c: block_factors(c) for c in ("FluxTransformer2DModel", "QwenImageTransformer2DModel")}
        print(json.dumps(factors, indent=2))
        return factors

    if not args.smoke and not torch.cuda.is_available():
        parser.error("no CUDA device: run with --smoke for the CPU path")
    device = "cpu" if args.smoke else "cuda"
    by_name = {p.name: p for p in mp.PIPELINES}
    kontext = by_name["FLUX.1-Kontext-dev"]

    def section(name: str) -> Callable[[], dict[str, Any]]:
        def run() -> dict[str, Any]:
            pipe = by_name[name]
            if args.smoke and name in ("FLUX.2-klein-9B", "FLUX.2-dev"):  # shrunk, they are klein 4B's config
                return {"status": "skipped", "reason": "--smoke: the same shrunk configuration as FLUX.2-klein-4B"}
            ok, why = fits_now(pipe, device)
            return check_transformer(pipe, args.smoke, device, args.steps) if ok else {"status": "skipped",
                                                                                       "reason": why}
        return run

    # Qwen-Image-Edit-2511 has 2509's transformer (measured once); the 32B FLUX.2 [dev] runs last: it is skipped
    # when the plan's single-GPU need does not fit the free memory
    sections = [("kontext", lambda: check_transformer(kontext, args.smoke, device, args.steps)),
                ("qwen_image_edit", section("Qwen-Image-Edit-2509")),
                ("flux2_klein_4b", section("FLUX.2-klein-4B")), ("flux2_klein_9b", section("FLUX.2-klein-9B")),
                ("qwen_image_21", section("Qwen-Image-2.1")), ("flux2_dev", section("FLUX.2-dev"))]
    if args.no_masker:
        masker_result = {"status": "skipped", "reason": "--no-masker"}
    else:
        sections.append(("grounded_masker", lambda: time_masker(args.smoke, device)))
    results = run_sections(sections, SMOKE_TIME_BUDGET_S if args.smoke else TIME_BUDGET_S)
    if args.no_masker:
        results["grounded_masker"] = masker_result
    result = {"device": "cpu-smoke" if args.smoke else torch.cuda.get_device_name(),
              "torch": torch.__version__, "lora_rank": 32, "lora_targets": list(mp.LORA_TARGETS), **results}
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")
    return result


if __name__ == "__main__":
    main()
