"""Session fixtures for the benchmark tests: fixture benchmarks in the public formats, built once; one tiny
FLUX.1-Kontext pipeline (H8's builder) and a LoRA for it, built once and loaded once."""
from __future__ import annotations

import pytest

from benchmarks import build, synthetic


@pytest.fixture(scope="session")
def bench_sources(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench_sources")
    return {"gedit": synthetic.make_gedit_fixture(root / "gedit", n=4),
            "imgedit": synthetic.make_imgedit_fixture(root / "imgedit", n=4)}


@pytest.fixture(scope="session")
def built(bench_sources, tmp_path_factory):
    """Both benchmarks built with the fixtures' reference masks (standing in for reviewed masks)."""
    root = tmp_path_factory.mktemp("built")
    out = {}
    for bench, path in bench_sources.items():
        build.build(bench, path, root / bench, masks_dir=path / "reference_masks", progress=False)
        out[bench] = root / bench
    return out


@pytest.fixture(scope="session")
def tiny_kontext(tiny_kontext_dir):
    """The session's tiny Kontext pipeline (tests/conftest.py), the same one the train tests use."""
    return tiny_kontext_dir


@pytest.fixture(scope="session")
def tiny_lora(tiny_kontext, tmp_path_factory):
    """A LoRA on the tiny transformer (non-zero B so it changes outputs), saved in the diffusers LoRA format."""
    import torch
    from diffusers import FluxKontextPipeline
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    pipe = FluxKontextPipeline.from_pretrained(tiny_kontext)
    transformer = pipe.transformer
    transformer.add_adapter(LoraConfig(r=4, lora_alpha=4, target_modules=["to_k", "to_q", "to_v", "to_out.0"]))
    with torch.no_grad():
        for name, param in transformer.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.5)
    directory = tmp_path_factory.mktemp("tiny_lora")
    FluxKontextPipeline.save_lora_weights(directory, transformer_lora_layers=get_peft_model_state_dict(transformer))
    return directory


@pytest.fixture(scope="session")
def kontext_pipe(tiny_kontext):
    from benchmarks.editor import EditorConfig, load_pipeline

    return load_pipeline(EditorConfig(model=str(tiny_kontext), device="cpu"))


def _bad_inputs():
    """tests/benchmarks/fixtures.py, loaded by path (pytest runs with --import-mode=importlib: no sys.path entry)."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("bench_bad_inputs", Path(__file__).with_name("fixtures.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def broken_sources(bench_sources):
    bad = _bad_inputs()
    return {"gedit": bad.break_gedit(bench_sources["gedit"]), "imgedit": bad.break_imgedit(bench_sources["imgedit"])}


@pytest.fixture(scope="session")
def tiny_qwen_edit(tmp_path_factory):
    """A tiny random QwenImageEditPipeline (tiny Qwen2.5-VL text encoder from tests.support.tiny.qwen_vl), saved to disk."""
    from tests.support.tiny.qwen_image_edit import build_tiny_qwen_image_edit

    return build_tiny_qwen_image_edit(tmp_path_factory.mktemp("tiny_qwen_edit") / "pipe")


@pytest.fixture(scope="session")
def tiny_config(tiny_kontext):
    """The editor settings every evaluate test uses (2 steps at 32², CPU), with overrides."""
    from benchmarks.editor import EditorConfig

    def make(**overrides):
        values = dict(model=str(tiny_kontext), steps=2, resolution=32, multiple_of=16, device="cpu")
        return EditorConfig(**{**values, **overrides})

    return make


@pytest.fixture(scope="session")
def base_runs(built, tiny_config, kontext_pipe, tmp_path_factory):
    """One full evaluate run per benchmark (batch size 1), shared: tests that only need outputs copy them."""
    from benchmarks import evaluation

    root = tmp_path_factory.mktemp("base_runs")
    return {bench: evaluation.evaluate(built[bench], root / bench / "base", tiny_config(), pipe=kontext_pipe,
                                     progress=False) | {"dir": root / bench / "base"} for bench in built}


@pytest.fixture
def warm_run(base_runs, tmp_path):
    """``warm_run(bench)`` -> a fresh run folder already holding the shared run's outputs (nothing to generate)."""
    import shutil

    def make(bench):
        run = tmp_path / "run"
        shutil.copytree(base_runs[bench]["dir"] / "outputs", run / "outputs")
        shutil.copy(base_runs[bench]["dir"] / "run.json", run / "run.json")
        return run

    return make


@pytest.fixture(scope="session")
def tiny_hf_clip_dir(tmp_path_factory):
    """The tiny transformers CLIP + its CLIPProcessor (tests.support.tiny.hf_clip), for CompBench's LC-T/LC-I."""
    from tests.support.tiny.hf_clip import build_hf_clip

    return build_hf_clip(tmp_path_factory.mktemp("tiny_hf_clip") / "clip")
