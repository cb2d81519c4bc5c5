"""`bench evaluate --lora`: a LoRA saved by our trainer (`python -m train`) and the same LoRA in PEFT's adapter
format (how CoCoEdit releases its Qwen-Image-Edit-2509 LoRA) evaluate on top of the base model, identically."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import evaluation as evaluate
from benchmarks.editor import EditorConfig, load_pipeline
from tests.support.numerics import assert_close

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def trained_lora(tiny_kontext, tmp_path_factory):
    from tests.train.conftest import build_edit_dataset
    from train.main import run

    root = tmp_path_factory.mktemp("trained_lora")
    dataset = build_edit_dataset(root / "dataset", corrupt=False)
    run(str(REPO / "train" / "configs" / "tiny_kontext.yaml"), [
        f"model.path={tiny_kontext}", f"data.dataset={dataset}", f"output_dir={root / 'run'}", "train.max_steps=1",
        "train.groups_per_step=1", "train.seed=1", "optim.learning_rate=0.05", "eval.every=0", "checkpoint.every=0",
        "logging.progress=false", "logging.tensorboard=false"])
    return root / "run" / "lora"


def as_peft(lora_dir: Path, out: Path, rank: int, alpha: int) -> Path:
    """The trainer's diffusers LoRA rewritten as a PEFT adapter folder (base_model.model.* keys + config)."""
    from safetensors.torch import load_file, save_file

    state = load_file(str(lora_dir / "pytorch_lora_weights.safetensors"))
    (out / "lora").mkdir(parents=True)
    save_file({k.replace("transformer.", "base_model.model.", 1): v for k, v in state.items()},
              str(out / "lora" / "adapter_model.safetensors"))
    (out / "lora" / "adapter_config.json").write_text(json.dumps({"r": rank, "lora_alpha": alpha, "peft_type": "LORA"}))
    return out


def _lora_deltas(pipe):
    return {n: p.detach().clone() for n, p in pipe.transformer.named_parameters() if "lora" in n}


def test_trainer_lora_evaluates_and_peft_copy_matches(trained_lora, built, tiny_config, base_runs, tmp_path):
    run = evaluate.evaluate(built["gedit"], tmp_path / "trained", tiny_config(lora=str(trained_lora)),
                            baseline_dir=base_runs["gedit"]["dir"], progress=False)
    some = next((base_runs["gedit"]["dir"] / "outputs").glob("*.png")).name
    assert (tmp_path / "trained" / "outputs" / some).read_bytes() != \
        (base_runs["gedit"]["dir"] / "outputs" / some).read_bytes()  # the trained LoRA changes the edits
    assert "compare_markdown" in run["paths"]
    peft = as_peft(trained_lora, tmp_path / "peft", rank=4, alpha=4)  # tiny_kontext.yaml: rank 4, alpha 4
    evaluate.evaluate(built["gedit"], tmp_path / "peft_run", tiny_config(lora=str(peft)), progress=False)
    for path in (tmp_path / "trained" / "outputs").glob("*.png"):
        assert path.read_bytes() == (tmp_path / "peft_run" / "outputs" / path.name).read_bytes()


def test_peft_alpha_sets_the_training_scale(trained_lora, tiny_kontext, tmp_path):
    peft = as_peft(trained_lora, tmp_path / "peft", rank=4, alpha=8)
    diffusers_pipe = load_pipeline(EditorConfig(model=str(tiny_kontext), lora=str(trained_lora), device="cpu"))
    peft_pipe = load_pipeline(EditorConfig(model=str(tiny_kontext), lora=str(peft), device="cpu"))
    assert _lora_deltas(diffusers_pipe).keys() == _lora_deltas(peft_pipe).keys()
    for a, b in zip(_lora_deltas(diffusers_pipe).values(), _lora_deltas(peft_pipe).values()):
        # same weights; the scale lives in the adapter weight
        assert_close(a, b, accumulations=1, why="the same LoRA tensors in two file formats: at most one rounding")
    scales = {m.scaling["baseline"] for m in peft_pipe.transformer.modules() if hasattr(m, "scaling")
              and "baseline" in getattr(m, "scaling", {})}
    assert scales == {2.0}  # lora_alpha / r
    unit = load_pipeline(EditorConfig(model=str(tiny_kontext), lora=str(peft), lora_scale=1.0, device="cpu"))
    assert {m.scaling["baseline"] for m in unit.transformer.modules() if hasattr(m, "scaling")
            and "baseline" in getattr(m, "scaling", {})} == {1.0}
    with pytest.raises(FileNotFoundError, match="neither"):
        load_pipeline(EditorConfig(model=str(tiny_kontext), lora=str(tmp_path), device="cpu"))
