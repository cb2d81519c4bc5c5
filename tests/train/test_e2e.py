"""End to end: `python -m train` on the tiny Kontext model and a small exported dataset; exact resume after SIGKILL;
`accelerate launch` with two CPU processes normalising groups that span them exactly like one process does."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.support.numerics import assert_close

REPO = Path(__file__).resolve().parents[2]
# one LoRA gradient element of the 2-process run: 4 samples × 2 trained timesteps × 544 tokens (256 target + 256
# condition + 32 text at 32 px), summed per process and then across the 2 processes instead of in one pass
GRAD_TERMS = 4 * 2 * 544
CONFIG = REPO / "train" / "configs" / "tiny_kontext.yaml"


def _args(model, dataset, out, *extra):
    return ["--config", str(CONFIG), f"model.path={model}", f"data.dataset={dataset}", f"output_dir={out}",
            "logging.progress=false", *extra]


def _train(*args, launcher=(sys.executable, "-m", "train"), env=None):
    result = subprocess.run([*launcher, *args], cwd=REPO, capture_output=True, text=True, timeout=600,
                            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})})
    assert result.returncode == 0, result.stderr[-4000:]
    return result


def _metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def reference_run(tiny_kontext_dir, edit_dataset_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "uninterrupted"
    _train(*_args(tiny_kontext_dir, edit_dataset_dir, out, "train.max_steps=5", "optim.gradient_accumulation=2"))
    return out


def test_train_writes_loadable_lora_and_logs(reference_run, tiny_kontext_pipe):
    metrics = _metrics(reference_run)
    assert [m["step"] for m in metrics] == [1, 2, 3, 4, 5]
    assert all(torch.isfinite(torch.tensor(m["loss"])) for m in metrics)
    assert any(m["nonfinite_rewards"] > 0 for m in metrics)  # the full-mask row: NaN reward, masked out, counted
    assert "eval_bg_psnr" in metrics[2] and "regularizer" in metrics[0]
    skipped = json.loads((reference_run / "skipped_rows.json").read_text())
    assert list(skipped) == ["6"] and "cannot read the source image" in skipped["6"]
    csv_lines = (reference_run / "plots" / "train_rewards.csv").read_text().splitlines()
    assert csv_lines[0].startswith("step,reward_mean") and len(csv_lines) == 6
    assert list((reference_run / "tensorboard").glob("events.out.tfevents.*"))
    pipe = tiny_kontext_pipe
    pipe.load_lora_weights(str(reference_run / "lora"))
    try:
        assert any("lora" in name for name, _ in pipe.transformer.named_parameters())
    finally:
        pipe.unload_lora_weights()


def test_sigkill_and_resume_reproduce_losses(reference_run, tiny_kontext_dir, edit_dataset_dir, tmp_path):
    out = tmp_path / "killed"
    args = _args(tiny_kontext_dir, edit_dataset_dir, out, "train.max_steps=5", "optim.gradient_accumulation=2")
    process = subprocess.Popen([sys.executable, "-m", "train", *args], cwd=REPO, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    marker = out / "checkpoints" / "step-000002" / "COMPLETE"
    deadline = time.time() + 300
    while not marker.exists() and process.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    assert process.poll() is None, "the run ended before it could be killed"
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (out / "lora").exists()  # it really died mid-run
    _train(*args, "--resume", "auto")
    resumed, reference = _metrics(out), _metrics(reference_run)
    assert [m["step"] for m in resumed] == [1, 2, 3, 4, 5]
    for ours, theirs in zip(resumed, reference):
        for key in ("loss", "reward_mean", "reward_std", "regularizer", "grad_norm"):
            assert ours[key] == theirs[key], (ours["step"], key)


@pytest.mark.integration
def test_accelerate_two_processes_match_one(tiny_kontext_dir, edit_dataset_dir, tmp_path):
    # one group of 4 per step, 2 per process: the group spans both processes (seed 1 draws a row with a
    # finite reward first; seed 0 would draw the full-mask row, whose rewards are all NaN)
    extra = ["objective.name=grpo", "objective.regularizer.enabled=false", "train.groups_per_step=1", "train.seed=1",
             "model.gradient_checkpointing=true",
             "train.group_size=4", "train.micro_batch_size=2", "train.max_steps=1", "eval.every=0"]
    single, double = tmp_path / "one", tmp_path / "two"
    _train(*_args(tiny_kontext_dir, edit_dataset_dir, single, *extra))
    # torchrun-style launch of 2 CPU processes (gloo); --cpu would pick accelerate's MPI launcher instead
    launcher = (str(Path(sys.executable).parent / "accelerate"), "launch", "--multi_gpu", "--num_processes", "2",
                "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "train")
    _train(*_args(tiny_kontext_dir, edit_dataset_dir, double, *extra), launcher=launcher,
           env={"CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"})
    assert json.loads((double / "checkpoints" / "step-000001" / "COMPLETE").read_text())["processes"] == 2
    one, two = _metrics(single)[0], _metrics(double)[0]
    for key in ("reward_mean", "reward_std", "kept_fraction", "grad_norm"):
        assert_close(two[key], one[key], dtype=torch.float32, accumulations=GRAD_TERMS, msg=key,
                     why="one update from gradients summed over 2 processes instead of 1")
    assert one["kept_fraction"] == 1.0 and two["ratio_first"] == 1.0
    from safetensors.torch import load_file

    a = load_file(single / "lora" / "pytorch_lora_weights.safetensors")
    b = load_file(double / "lora" / "pytorch_lora_weights.safetensors")
    for key in a:
        assert_close(b[key], a[key], dtype=torch.float32, accumulations=GRAD_TERMS, msg=key,
                     why="the LoRA after one update from gradients summed over 2 processes instead of 1")
