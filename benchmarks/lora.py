"""Load a LoRA baseline onto an editing pipeline: a diffusers LoRA (``pytorch_lora_weights.safetensors``, what our
trainer saves), a single ``.safetensors`` file, or a PEFT adapter folder (``adapter_model.safetensors`` +
``adapter_config.json``, e.g. CoCoEdit's released Qwen-Image-Edit-2509 LoRA, also under a ``lora/`` subfolder).

PEFT keys (``base_model.model.<module>``) are renamed to diffusers' ``transformer.<module>`` and loaded with
``load_lora_weights``. diffusers then assumes ``lora_alpha = r``; the adapter is re-weighted to its training scale
``lora_alpha / r`` from ``adapter_config.json`` unless ``scale`` is given (CoCoEdit's scripts load the converted
file without re-weighting, i.e. at scale 1: pass ``--lora-scale 1`` to reproduce them).
"""
from __future__ import annotations

import json
from pathlib import Path

DIFFUSERS_FILE = "pytorch_lora_weights.safetensors"
PEFT_FILE, PEFT_CONFIG = "adapter_model.safetensors", "adapter_config.json"
ADAPTER = "baseline"


def find_peft(path: Path) -> Path | None:
    for folder in (path, path / "lora"):
        if (folder / PEFT_FILE).is_file():
            return folder
    return None


def load_lora(pipe, path: str | Path, scale: float | None = None) -> None:
    from safetensors.torch import load_file

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"LoRA {path} does not exist")
    peft = None if path.is_file() or (path / DIFFUSERS_FILE).is_file() else find_peft(path)
    if peft is None:
        if path.is_dir() and not (path / DIFFUSERS_FILE).is_file():
            raise FileNotFoundError(f"{path} holds neither {DIFFUSERS_FILE} (diffusers) nor {PEFT_FILE} (PEFT)")
        pipe.load_lora_weights(str(path), adapter_name=ADAPTER)
        training_scale = 1.0
    else:
        state = {_diffusers_key(k): v for k, v in load_file(str(peft / PEFT_FILE)).items()}
        pipe.load_lora_weights(state, adapter_name=ADAPTER)
        training_scale = 1.0
        if (peft / PEFT_CONFIG).is_file():
            config = json.loads((peft / PEFT_CONFIG).read_text())
            if config.get("r") and config.get("lora_alpha"):
                training_scale = float(config["lora_alpha"]) / float(config["r"])
    weight = training_scale if scale is None else float(scale)
    if weight != 1.0:
        pipe.set_adapters([ADAPTER], adapter_weights=[weight])


def _diffusers_key(key: str) -> str:
    for prefix in ("base_model.model.transformer.", "base_model.model."):
        if key.startswith(prefix):
            return "transformer." + key[len(prefix):]
    return key
