"""`editkit train export`: the LoRA in diffusers' format loads into each tiny pipeline (FLUX.2 [klein] and [dev],
Qwen-Image 2.1, Qwen-Image-Edit), the merged transformer equals base + LoRA, and the model card names the base
model, the recipe, the data's licences and the benchmark results."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.support import adapters
from tests.support.numerics import assert_close
from tests.support.tiny.flux2 import cached_tiny_flux2
from tests.support.tiny.qwen_image_21 import cached_tiny_qwen_image_21
from train.config import LoraConfig, load_config

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.usefixtures("one_thread")


def _trained_run(adapter_name: str, path: Path, run_dir: Path):
    """A run folder holding a LoRA with non-zero B matrices, saved by the adapter as training does."""
    from train.adapters import build_adapter
    from train.config import ModelConfig

    adapter = build_adapter(ModelConfig(adapter=adapter_name, path=str(path)), torch.device("cpu"), torch.float32)
    adapter.add_lora(LoraConfig(rank=4, alpha=4))
    with torch.no_grad():
        for name, parameter in adapter.transformer.named_parameters():
            if "lora_B" in name:
                parameter.normal_(generator=torch.Generator().manual_seed(0))
    (run_dir / "lora").mkdir(parents=True)
    adapter.save_lora(run_dir / "lora")
    (run_dir / "metrics.jsonl").write_text(json.dumps({"step": 3, "reward_pixel_consistency": 0.61}) + "\n")
    return adapter


@pytest.mark.parametrize("adapter_name, twin", [("flux2", "klein"), ("flux2", "dev"), ("qwen_image_21", "q21"),
                                                ("qwen_image_edit", "qwen")])
def test_exported_lora_loads_into_the_pipeline(adapter_name, twin, tiny_qwen_dir, edit_dataset_dir, tmp_path):
    from safetensors.torch import load_file

    from train.export import export

    path = {"klein": lambda: cached_tiny_flux2("klein"), "dev": lambda: cached_tiny_flux2("dev"),
            "q21": cached_tiny_qwen_image_21, "qwen": lambda: tiny_qwen_dir}[twin]()
    adapter = _trained_run(adapter_name, path, tmp_path / "run")
    trained = load_file(str(tmp_path / "run" / "lora" / "pytorch_lora_weights.safetensors"))
    assert any(v.abs().max() > 0 for k, v in trained.items() if "lora_B" in k)  # not the zero init
    config = load_config(REPO / "train" / "configs" / "tiny_kontext.yaml",
                         [f"model.adapter={adapter_name}", f"model.path={path}", f"data.dataset={edit_dataset_dir}"])
    benchmark = tmp_path / "bench.json"
    benchmark.write_text(json.dumps({"gedit": {"bg_psnr": 31.5, "vie_overall": 6.2}}))
    out = export(config, tmp_path / "export", tmp_path / "run", merge=twin == "klein", benchmark=benchmark)
    pipe = type(adapter.pipe).from_pretrained(str(path))  # a fresh pipeline, as a user loads it
    with adapters.loaded_lora(pipe, out):
        if twin == "klein":  # the merged transformer computes base + LoRA
            merged = type(pipe.transformer).from_pretrained(str(out / "transformer"))
            x = torch.randn(1, 16, pipe.transformer.config.in_channels, generator=torch.Generator().manual_seed(1))
            kwargs = dict(hidden_states=x, encoder_hidden_states=torch.randn(1, 8, 48), timestep=torch.tensor([0.5]),
                          img_ids=torch.cartesian_prod(torch.arange(1), torch.arange(4), torch.arange(4),
                                                       torch.arange(1)),
                          txt_ids=torch.cartesian_prod(torch.arange(1), torch.arange(1), torch.arange(1),
                                                       torch.arange(8)), return_dict=False)
            with torch.no_grad():
                assert_close(merged(**kwargs)[0], pipe.transformer(**kwargs)[0], dtype=torch.float32,
                             accumulations=2 * pipe.transformer.inner_dim,
                             why="W + BA fused vs W x + B(A x): another order of the same float32 products")
    card = (out / "README.md").read_text()
    assert f"base_model: {path}" in card and "library_name: diffusers" in card
    assert "| objective | nft |" in card and "pixel_consistency × 1.0" in card
    assert "| steps trained | 3 |" in card and "reward_pixel_consistency | 0.6100" in card
    assert "| x | x | 7 |" in card  # the tiny dataset: every text column (source dataset, licence) is "x"
    assert "| gedit.bg_psnr | 31.5 |" in card


def test_export_refuses_a_run_without_a_diffusers_lora(tmp_path):
    from train.export import ExportError, export

    config = load_config(REPO / "train" / "configs" / "tiny_kontext.yaml")
    with pytest.raises(ExportError, match="no LoRA in"):
        export(config, tmp_path / "out", tmp_path)
    from safetensors.torch import save_file

    save_file({"base_model.model.x.lora_A.weight": torch.zeros(1)}, str(tmp_path / "pytorch_lora_weights.safetensors"))
    with pytest.raises(ExportError, match="not a diffusers transformer LoRA"):
        export(config, tmp_path / "out", tmp_path)
