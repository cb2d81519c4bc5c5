"""SFT cold start on the tiny Qwen2.5-VL: records checked, answer-only loss, checkpoints, exact resume, CLI."""
from __future__ import annotations

import json

import pytest
import torch

from editkit.config import load_file
from editkit.errors import OutputRefused
from tests.support.numerics import assert_close
from tests.train.rrm.conftest import assert_identical_checkpoints, metrics, write_sft_jsonl
from train.rrm.config import SFTRunConfig
from train.rrm.sft import SFTTrainer


def sft_args(model_dir, data, out, *extra):
    return [f"model.path={model_dir}", "model.device=cpu", f"data.path={data}", f"output_dir={out}",
            "lora.rank=4", "lora.alpha=8", "lora.dropout=0.1",  # dropout: resume must restore the RNG too
            "optim.learning_rate=0.01", "optim.warmup_steps=4",  # the LR schedule is resumed too
            "train.batch_size=3", "train.micro_batch_size=2", "train.max_steps=4", "checkpoint.every=2",
            "logging.tensorboard=false", "logging.progress=false", *extra]


def sft_config(model_dir, data, out, *extra):
    return load_file(SFTRunConfig, None, sft_args(model_dir, data, out, *extra))


@pytest.fixture(scope="module")
def sft_data(tmp_path_factory):
    return write_sft_jsonl(tmp_path_factory.mktemp("sft_data"))


def test_rejected_records_have_reasons(sft_data, tiny_vl_dir, tmp_path):
    from train.rrm.data import load_sft

    records, rejected = load_sft(sft_data)
    assert len(records) == 4
    reasons = [r["reason"] for r in rejected]
    assert any("leaves the file's folder" in r for r in reasons) and any("absolute path" in r for r in reasons)
    assert any("no JSON" in r for r in reasons) and any("not JSON" in r for r in reasons) and len(rejected) == 4


def test_resume_in_a_new_process_is_bit_identical(sft_data, tiny_vl_dir, tmp_path):
    """4 steps straight vs 2 steps, then a new process resuming the step-2 checkpoint for steps 3 and 4: the same
    losses, and the step-4 checkpoints (weights, AdamW moments, LR schedule, RNG) and final models bit-identical."""
    import subprocess
    import sys
    from pathlib import Path

    full = tmp_path / "full"
    SFTTrainer(sft_config(tiny_vl_dir, sft_data, full)).fit()
    reference = metrics(full)
    assert [m["step"] for m in reference] == [1, 2, 3, 4]
    assert reference[-1]["loss"] < reference[0]["loss"]  # it learns
    assert reference[0]["lr"] < reference[1]["lr"] < reference[2]["lr"] == reference[3]["lr"]  # warm-up over the cut
    assert json.loads((full / "rejected.json").read_text())[0]["reason"]
    cut = tmp_path / "cut"
    SFTTrainer(sft_config(tiny_vl_dir, sft_data, cut, "train.max_steps=2")).fit()  # "dies" after step 2
    assert sorted(p.name for p in (cut / "checkpoints").iterdir()) == ["step-000002"]
    with pytest.raises(OutputRefused, match="--resume auto"):
        SFTTrainer(sft_config(tiny_vl_dir, sft_data, cut)).fit()
    repo = Path(__file__).resolve().parents[3]
    result = subprocess.run([sys.executable, "-m", "train.rrm", "sft", "--resume", "auto",
                             *sft_args(tiny_vl_dir, sft_data, cut)], cwd=repo, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    resumed = metrics(cut)
    assert [m["step"] for m in resumed] == [1, 2, 3, 4]
    for ours, theirs in zip(resumed, reference):
        for key in ("loss", "grad_norm", "lr", "answer_tokens"):
            assert ours[key] == theirs[key], (ours["step"], key)
    assert_identical_checkpoints(full / "checkpoints" / "step-000004", cut / "checkpoints" / "step-000004")
    from transformers import Qwen2_5_VLForConditionalGeneration

    a = Qwen2_5_VLForConditionalGeneration.from_pretrained(full / "model")
    b = Qwen2_5_VLForConditionalGeneration.from_pretrained(cut / "model")
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(x, y), name


def test_full_finetuning_and_first_loss_is_answer_cross_entropy(sft_data, tiny_vl_dir, tmp_path):
    from train.rrm.format import build_request
    from train.rrm.model import answers_from_texts, encode_prompts, join, sft_labels

    config = sft_config(tiny_vl_dir, sft_data, tmp_path / "full_ft", "lora.enabled=false", "train.max_steps=1",
                        "train.micro_batch_size=3", "optim.warmup_steps=0")
    trainer = SFTTrainer(config)
    items = trainer.step_items(1)
    prompts = encode_prompts(trainer.processor, [build_request(r.instruction, r.source, r.edited) for r in items])
    answers = answers_from_texts(trainer.processor, [r.trajectory for r in items])
    with torch.no_grad():
        expected = trainer.model(**join(prompts, answers), labels=sft_labels(prompts, answers)).loss.item()
    trainer.fit()
    terms = int(answers.mask.sum()) * len(trainer.processor.tokenizer)  # answer tokens × vocab-long softmaxes
    assert_close(metrics(tmp_path / "full_ft")[0]["loss"], expected, dtype=torch.float32, accumulations=terms,
                 why="the same float32 forward and cross-entropy in the trainer's call: sums in another order")
    trainable = [n for n, p in trainer.model.named_parameters() if p.requires_grad]
    assert not any("lora" in n for n in trainable) and not any(n.startswith("model.visual.blocks") for n in trainable)
