"""`bench evaluate` runs FLUX.2 [klein] / [dev] and Qwen-Image 2.1 (tiny twins) with a LoRA saved by the trainer's
adapters: the LoRA is on the evaluated transformer and every benchmark item gets an output."""
from __future__ import annotations

import pytest
import torch

from benchmarks import evaluation
from benchmarks.editor import EditorConfig, load_pipeline
from tests.support.numerics import assert_exact
from tests.support.tiny.flux2 import cached_tiny_flux2
from tests.support.tiny.qwen_image_21 import cached_tiny_qwen_image_21
from tests.train.test_export import _trained_run


@pytest.mark.parametrize("adapter_name, twin", [("flux2", "klein"), ("flux2", "dev"), ("qwen_image_21", "q21")])
def test_evaluate_with_a_lora(adapter_name, twin, built, tmp_path):
    from safetensors.torch import load_file

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices on a shared 2-core machine
    try:
        path = {"klein": lambda: cached_tiny_flux2("klein"), "dev": lambda: cached_tiny_flux2("dev"),
                "q21": cached_tiny_qwen_image_21}[twin]()
        _trained_run(adapter_name, path, tmp_path / "run")
        lora = tmp_path / "run" / "lora"
        # FLUX.2 takes condition images of at least 64 px; Qwen-Image 2.1 sides are multiples of 32
        config = EditorConfig(model=str(path), lora=str(lora), steps=2, resolution=64, multiple_of=32, device="cpu")
        pipe = load_pipeline(config)
        saved = load_file(str(lora / "pytorch_lora_weights.safetensors"))
        name = next(n for n in saved if "lora_B" in n)
        module = name.removeprefix("transformer.").replace(".weight", "")
        assert_exact(next(p for n, p in pipe.transformer.named_parameters() if n.startswith(module) and "lora_B" in n),
                     saved[name], why="the evaluated transformer carries the LoRA's values")
        result = evaluation.evaluate(built["gedit"], tmp_path / "eval", config, pipe=pipe, progress=False)
    finally:
        torch.set_num_threads(threads)
    outputs = sorted((tmp_path / "eval" / "outputs").glob("*.png"))
    assert len(outputs) == result["stats"]["generated"] > 0 and result["stats"]["generation_failed"] == 0, result["stats"]
