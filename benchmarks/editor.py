"""Run an editing pipeline over benchmark items: batched, fixed seed, one cached output per item (resumable).

The model is any diffusers image-editing pipeline loaded with ``DiffusionPipeline.from_pretrained`` (a hub id or a
local folder: FLUX.1-Kontext, Qwen-Image-Edit(-2509/2511), FLUX.2 [klein] / [dev], Qwen-Image 2.1), optionally with
a LoRA (``load_lora_weights``). Each item's output is
written to ``<run>/outputs/<record id>.png`` as soon as its batch finishes (atomic rename), so a killed run restarts
where it stopped; ``<run>/run.json`` pins the settings, and a rerun with different settings is refused instead of
mixing outputs of two models.
"""
from __future__ import annotations

import math
import os
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np

from editkit import store

# Per pipeline family: call arguments beyond image/prompt/size. Kontext uses its distilled guidance (no true CFG)
# and must not snap the condition image to its preferred resolutions; Qwen-Image-Edit uses true CFG.
FAMILIES: dict[str, dict[str, Any]] = {
    "FluxKontextPipeline": {"guidance_scale": 2.5, "_auto_resize": False},
    "QwenImageEditPipeline": {"true_cfg_scale": 4.0, "negative_prompt": " "},
    "QwenImageEditPlusPipeline": {"true_cfg_scale": 4.0, "negative_prompt": " "},
    # FLUX.2 [klein] base: true CFG against "" (ignored by step-distilled checkpoints); [dev]: guidance embedding
    "Flux2KleinPipeline": {"guidance_scale": 4.0},
    "Flux2Pipeline": {"guidance_scale": 4.0},
    # Qwen-Image 2.1 samples without CFG; its condition image is resized to output_resolution² (set to the working
    # area below)
    "QwenImage21Pipeline": {"true_cfg_scale": 1.0},
}
# Pipelines that read a list of images as several references for EVERY prompt: one item per call
ONE_ITEM_PER_CALL = {"Flux2KleinPipeline", "Flux2Pipeline", "QwenImage21Pipeline"}


@dataclass
class EditorConfig:
    model: str
    lora: str | None = None  # a diffusers LoRA folder/file, or a PEFT adapter folder (adapter_model.safetensors)
    lora_scale: float | None = None  # None: PEFT adapters at their training scale lora_alpha/r, others 1
    seed: int = 0
    steps: int = 28
    guidance: float | None = None  # None: the family's default (Kontext 2.5, Qwen true CFG 4.0)
    resolution: int = 512  # working area = resolution^2 at the source's aspect ratio (GEdit's protocol)
    multiple_of: int = 32  # sides of the working size are multiples of this
    batch_size: int = 1
    device: str = "auto"  # auto: cuda when available
    dtype: str = "auto"  # auto: bfloat16 on cuda, float32 on cpu

    def fingerprint(self) -> dict[str, Any]:
        """Settings that change the outputs (batch size, device and dtype do not count as a different run)."""
        keep = ("model", "lora", "lora_scale", "seed", "steps", "guidance", "resolution", "multiple_of")
        # lora_scale only when set: run folders pinned before the option existed stay valid
        return {k: v for k, v in asdict(self).items() if k in keep and not (k == "lora_scale" and v is None)}


def working_size(width: int, height: int, resolution: int, multiple_of: int) -> tuple[int, int]:
    """(w, h) with area ~resolution^2, the source's aspect ratio, both sides multiples of ``multiple_of``."""
    ratio = width / height
    w = max(multiple_of, round(math.sqrt(resolution * resolution * ratio) / multiple_of) * multiple_of)
    h = max(multiple_of, round(w / ratio / multiple_of) * multiple_of)
    return int(w), int(h)


def load_pipeline(config: EditorConfig):
    import torch
    from diffusers import DiffusionPipeline

    device = config.device if config.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    if config.dtype == "auto":
        dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    else:
        dtype = getattr(torch, config.dtype)
    try:
        pipe = DiffusionPipeline.from_pretrained(config.model, dtype=dtype)
    except (OSError, ValueError) as error:
        raise RuntimeError(f"cannot load the editing pipeline {config.model!r} (a diffusers hub id or a local "
                           f"folder with model_index.json): {error}") from error
    if config.lora:
        from benchmarks.lora import load_lora

        load_lora(pipe, config.lora, config.lora_scale)
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


class OutputCache:
    """``<run>/outputs/<id>.png`` plus the pinned settings in ``<run>/run.json``."""

    def __init__(self, run_dir: Path | str, fingerprint: dict[str, Any]):
        import json

        self.dir = Path(run_dir) / "outputs"
        self.dir.mkdir(parents=True, exist_ok=True)
        pinned = Path(run_dir) / "run.json"
        if pinned.exists():
            before = json.loads(pinned.read_text()).get("editor")
            if before is not None and before != fingerprint:
                raise ValueError(f"{run_dir} holds outputs of other settings ({before}); these are {fingerprint}. "
                                 "Use another --out folder (or delete it) to start a new run")
        store.write_json(pinned, {"editor": fingerprint})

    def path(self, record_id: str) -> Path:
        return self.dir / f"{record_id}.png"

    def has(self, record_id: str) -> bool:
        return self.path(record_id).is_file()

    def load(self, record_id: str) -> np.ndarray:
        return store.decode_rgb(self.path(record_id).read_bytes())

    def save(self, record_id: str, image: np.ndarray) -> None:
        final = self.path(record_id)
        tmp = final.with_name(f".{final.name}.tmp-{uuid.uuid4().hex[:8]}")
        tmp.write_bytes(store.encode_png(image))
        os.replace(tmp, final)


def generate(
    items: Iterable[tuple[dict[str, Any], np.ndarray]],
    cache: OutputCache,
    config: EditorConfig,
    pipe: Any = None,
    on_item: Callable[[str], None] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Edit every (record, source image) whose output is not cached yet. Returns counts and per-item failures.

    Items are grouped by working size (a batch shares one size); every item gets its own generator seeded with
    ``config.seed``, so an output does not depend on which items shared its batch.
    """
    from tqdm.auto import tqdm

    pending: dict[tuple[int, int], list[tuple[dict[str, Any], np.ndarray]]] = {}
    cached = 0
    for record, image in items:
        if cache.has(record["id"]):
            cached += 1
            continue
        size = working_size(image.shape[1], image.shape[0], config.resolution, config.multiple_of)
        pending.setdefault(size, []).append((record, image))
    todo = sum(len(v) for v in pending.values())
    failures: dict[str, str] = {}
    if todo and pipe is None:
        pipe = load_pipeline(config)
    with tqdm(total=todo, desc="edit", unit="img", disable=not progress) as bar:
        for size, group in pending.items():
            for start in range(0, len(group), config.batch_size):
                batch = group[start:start + config.batch_size]
                try:
                    outputs = _run_batch(pipe, batch, size, config)
                except Exception as error:  # one bad batch must not end the run; recorded per item
                    outputs = [f"generation failed: {type(error).__name__}: {error}"] * len(batch)
                for (record, _), output in zip(batch, outputs):
                    if isinstance(output, str):
                        failures[record["id"]] = output
                    else:
                        cache.save(record["id"], output)
                    bar.update(1)
                    if on_item is not None:
                        on_item(record["id"])
    return {"generated": todo - len(failures), "cached": cached, "failures": failures}


def _run_batch(pipe: Any, batch: list[tuple[dict[str, Any], np.ndarray]], size: tuple[int, int],
               config: EditorConfig) -> list[np.ndarray | str]:
    import torch
    from PIL import Image

    width, height = size
    name = type(pipe).__name__
    if name in ONE_ITEM_PER_CALL and len(batch) > 1:
        return [output for item in batch for output in _run_batch(pipe, [item], size, config)]
    family = dict(FAMILIES.get(name, {}))
    if name == "QwenImage21Pipeline":
        family["output_resolution"] = config.resolution
    if config.guidance is not None:
        family["true_cfg_scale" if "true_cfg_scale" in family else "guidance_scale"] = config.guidance
    if "_auto_resize" in family:
        family["max_area"] = width * height
    if "negative_prompt" in family:
        family["negative_prompt"] = [family["negative_prompt"]] * len(batch)
    images = [Image.fromarray(image).resize((width, height), Image.Resampling.LANCZOS) for _, image in batch]
    device = getattr(pipe, "_execution_device", "cpu")
    generators = [torch.Generator(device=device).manual_seed(config.seed) for _ in batch]
    if name in ONE_ITEM_PER_CALL:  # one item: its image is the one reference, not a list of references
        images, generators = images[0], generators[0]
    result = pipe(image=images, prompt=[r["instruction"] for r, _ in batch], height=height, width=width,
                  num_inference_steps=config.steps, generator=generators, output_type="np", **family)
    arrays = np.asarray(result.images, dtype=np.float32)[..., :3]  # Qwen-Image 2.1 decodes RGBA
    outputs: list[np.ndarray | str] = []
    for array in arrays:
        if not np.isfinite(array).all():
            outputs.append("generation failed: non-finite values in the output (NaN/inf)")
        else:
            outputs.append((np.clip(array, 0.0, 1.0) * 255.0).round().astype(np.uint8))
    return outputs
