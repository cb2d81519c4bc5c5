"""The trainer under ``train.parallelism=fsdp2`` on 2 gloo CPU processes, tiny Kontext and tiny Qwen-Image-Edit, GRPO
and NFT: the same losses and LoRA as DDP after 2 updates, exact resume, DDP checkpoints resumed under FSDP2 and
back, the same rollouts with 1 and 2 processes, and a torchrun (c10d rendezvous) launch.

Both runs go through the same trainer in the same processes (one spawn per model: starting processes costs more
than these runs). Tolerance FSDP2 vs DDP (tests.support.numerics, float32): the first update's losses are the
same numbers (same weights, same kernels); after it the weights differ by the order of float sums (the gradient
norm is summed per shard then over ranks; the reduce-scatter averages before it sums): a random walk over the
GRAD_TERMS terms of one LoRA gradient element, once per update. Resuming under the same parallelism is exact (==).
The fast float32 parity check of the same FSDP2 code is tests/train/test_parallel.py (marked parity); these runs
take minutes, so they are not in the parity subset."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.support.gloo import run_ranks
from tests.support.numerics import assert_close, assert_states_close

pytestmark = pytest.mark.slow  # whole trainer runs on 2 processes: minutes on the 2-core machine

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "train" / "configs" / "tiny_kontext.yaml"
# one LoRA gradient element: 2 processes × 2 accumulated micro-batches × 2 samples × 2 trained timesteps × 544
# tokens (256 target + 256 condition + 32 text at 32 px), summed in another order by the sharded run
GRAD_TERMS = 2 * 2 * 2 * 2 * 544
UPDATES_PER_STEP = 2  # gradient_accumulation=2 over 4 samples per process: 2 updates per iteration
ALGORITHMS = ("grpo", "nft")


def _overrides(adapter, model, dataset, out, parallelism, algorithm, *extra):
    # micro-batches of 2 and 2 backward passes per update: 2 updates per iteration, the first behind no_sync
    return [f"model.adapter={adapter}", f"model.path={model}", f"data.dataset={dataset}", f"output_dir={out}",
            f"train.parallelism={parallelism}", f"objective.name={algorithm}", "train.seed=1",
            "train.micro_batch_size=2", "optim.gradient_accumulation=2", "train.max_steps=2", "eval.every=0",
            "checkpoint.every=1", "logging.progress=false", "logging.tensorboard=false",
            *(["objective.regularizer.enabled=false"] if algorithm == "grpo" else
              # NFT with CoCoEdit's lagged sampling policy θ_old (fast decay: it matters within 2 steps)
              ["objective.nft.old_decay_rate=0.3", "objective.nft.old_decay_max=0.5"]), *extra]


def _fit(overrides, resume=None):
    from train.main import run

    run(str(CONFIG), overrides, resume)


def _rollouts(overrides) -> torch.Tensor:
    """The first iteration's rollouts (clean latents) of every process, gathered in sample order."""
    from train.config import load_config
    from train.trainers import TRAINERS

    config = load_config(CONFIG, overrides)
    trainer = TRAINERS.get(config.objective.name)(config)
    batch = trainer.make_batch(1)
    trainer.sample(batch, 1)
    trainer.reward_scheduler.close()
    return trainer.accelerator.gather(batch.samples.final.contiguous()).cpu()


def _training_worker(rank, world, adapter, model, dataset, root, with_resume):
    root = Path(root)
    runs = {}
    for algorithm in ALGORITHMS:
        for parallelism in ("ddp", "fsdp2"):
            runs[parallelism, algorithm] = root / f"{parallelism}-{algorithm}"
            _fit(_overrides(adapter, model, dataset, runs[parallelism, algorithm], parallelism, algorithm))
    result = {}
    if with_resume:
        # an interrupted FSDP2 run (stopped after its step-1 checkpoint), resumed: step 2 must be identical
        out = root / "fsdp2-nft-resumed"
        _fit(_overrides(adapter, model, dataset, out, "fsdp2", "nft", "train.max_steps=1"))
        _fit(_overrides(adapter, model, dataset, out, "fsdp2", "nft"), resume="auto")
        # step-1 checkpoints resumed under the other parallelism
        for written, resumed in (("ddp", "fsdp2"), ("fsdp2", "ddp")):
            out = root / f"{written}-to-{resumed}"
            if rank == 0:
                step_1 = Path("checkpoints") / "step-000001"
                shutil.copytree(runs[written, "nft"] / step_1, out / step_1)
            torch.distributed.barrier()
            _fit(_overrides(adapter, model, dataset, out, resumed, "nft"), resume="auto")
        result["rollouts"] = _rollouts(_overrides(adapter, model, dataset, root / "rollouts", "fsdp2", "nft"))
    return result


def _rollout_worker(rank, world, adapter, model, dataset, root):
    return _rollouts(_overrides(adapter, model, dataset, Path(root) / "rollouts-1", "fsdp2", "nft"))


def _metrics(out: Path) -> dict[int, dict]:
    return {m["step"]: m for m in map(json.loads, (out / "metrics.jsonl").read_text().splitlines())}


def _lora(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(path / "pytorch_lora_weights.safetensors")


def _assert_lora_close(a: Path, b: Path, *, updates: int | None = None, exact: bool = False):
    assert_states_close(_lora(a), _lora(b), exact=exact, dtype=torch.float32, accumulations=GRAD_TERMS, steps=updates,
                        why="the same computation resumed or relaunched" if exact
                        else f"LoRA after {updates} updates from gradients summed in another order")


@pytest.fixture(scope="module")
def kontext_runs(tiny_kontext_dir, edit_dataset_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("fsdp_kontext")
    results = run_ranks(_training_worker, 2, "flux_kontext", str(tiny_kontext_dir), str(edit_dataset_dir),
                        str(root), True)
    return root, results


@pytest.fixture(scope="module")
def qwen_runs(tiny_qwen_dir, edit_dataset_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("fsdp_qwen")
    run_ranks(_training_worker, 2, "qwen_image_edit", str(tiny_qwen_dir), str(edit_dataset_dir), str(root), False)
    return root


def _scale(metrics: dict, key: str) -> float | None:
    """The size of what a metric's rounding error is relative to: the loss is a mean of advantage-weighted terms of
    order 1 (advantages have unit spread) that cancels to ~0, so its error is relative to 1, not to its value."""
    return max(abs(metrics[key]), 1.0) if key == "loss" else None


def _assert_fsdp2_equals_ddp(root: Path, algorithm: str):
    ddp, fsdp = root / f"ddp-{algorithm}", root / f"fsdp2-{algorithm}"
    ours, theirs = _metrics(fsdp), _metrics(ddp)
    assert sorted(ours) == sorted(theirs) == [1, 2]
    assert theirs[1]["grad_norm"] > 0 and theirs[1]["kept_fraction"] > 0  # the LoRA really moves
    for key in ("reward_mean", "reward_std"):  # the first rollouts come from the same initial LoRA
        assert ours[1][key] == theirs[1][key], key
    for step in (1, 2):
        for key in ("loss", "grad_norm", "reward_mean"):
            assert_close(ours[step][key], theirs[step][key], dtype=torch.float32, accumulations=GRAD_TERMS,
                         steps=UPDATES_PER_STEP * step, msg=f"step {step} {key}", scale=_scale(theirs[step], key),
                         why="metrics of LoRAs trained on gradients summed in another order")
    for name, updates in (("checkpoints/step-000001/lora", 2), ("lora", 4)):
        _assert_lora_close(fsdp / name, ddp / name, updates=updates)
    state = json.loads((fsdp / "checkpoints" / "step-000002" / "COMPLETE").read_text())
    assert state["processes"] == 2


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_kontext_fsdp2_equals_ddp(kontext_runs, algorithm):
    _assert_fsdp2_equals_ddp(kontext_runs[0], algorithm)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_qwen_image_edit_fsdp2_equals_ddp(qwen_runs, algorithm):
    _assert_fsdp2_equals_ddp(qwen_runs, algorithm)


def test_fsdp2_resume_reproduces_the_uninterrupted_run(kontext_runs):
    root = kontext_runs[0]
    resumed, uninterrupted = _metrics(root / "fsdp2-nft-resumed"), _metrics(root / "fsdp2-nft")
    assert sorted(resumed) == [1, 2]
    for key in ("loss", "reward_mean", "reward_std", "regularizer", "grad_norm"):
        assert resumed[2][key] == uninterrupted[2][key], key
    _assert_lora_close(root / "fsdp2-nft-resumed" / "lora", root / "fsdp2-nft" / "lora", exact=True)


@pytest.mark.parametrize("written,resumed", [("ddp", "fsdp2"), ("fsdp2", "ddp")])
def test_checkpoint_resumes_under_the_other_parallelism(kontext_runs, written, resumed):
    root = kontext_runs[0]
    switched, original = _metrics(root / f"{written}-to-{resumed}"), _metrics(root / f"{written}-nft")
    assert sorted(switched) == [2]  # only the resumed step was run here
    for key in ("loss", "reward_mean", "grad_norm"):
        assert_close(switched[2][key], original[2][key], dtype=torch.float32, accumulations=GRAD_TERMS,
                     steps=UPDATES_PER_STEP, msg=key, scale=_scale(original[2], key),
                     why="the resumed iteration's updates, sharded vs not")
    _assert_lora_close(root / f"{written}-to-{resumed}" / "lora", root / f"{written}-nft" / "lora",
                       updates=UPDATES_PER_STEP)


def test_one_and_two_fsdp2_processes_give_the_same_rollouts(kontext_runs, tiny_kontext_dir, edit_dataset_dir,
                                                           tmp_path):
    root, results = kontext_runs
    two = results[0]["rollouts"]
    assert torch.equal(two, results[1]["rollouts"])
    (one,) = run_ranks(_rollout_worker, 1, "flux_kontext", str(tiny_kontext_dir), str(edit_dataset_dir),
                       str(tmp_path))
    assert one.shape == two.shape and one.shape[0] == 8  # 2 groups of 4, all samples of the iteration
    # per-sample seeds: each sample's rollout is the same whichever process computed it; the transformer's
    # batched kernels give the same values for any batch split up to float rounding
    assert_close(one, two, dtype=torch.float32, accumulations=(32 + 544) * 2, steps=4,
                 why="batch-dependent kernels: (inner dim 32 + 544 keys) × 2 layers, 4 denoising steps")


@pytest.mark.integration
def test_torchrun_c10d_launch_matches_the_spawned_run(kontext_runs, tiny_kontext_dir, edit_dataset_dir, tmp_path):
    """The multi-node launch line (c10d rendezvous), on one node: the same numbers as the run above."""
    root = kontext_runs[0]
    out = tmp_path / "torchrun"
    torchrun = Path(sys.executable).parent / "torchrun"
    command = [str(torchrun), "--nnodes", "1", "--nproc-per-node", "2", "--rdzv-backend", "c10d",
               "--rdzv-endpoint", "127.0.0.1:0", "--rdzv-id", "fsdp-test", "-m", "train", "--config", str(CONFIG),
               *_overrides("flux_kontext", tiny_kontext_dir, edit_dataset_dir, out, "fsdp2", "nft",
                           "train.max_steps=1")]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600,
                            env={**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-4000:]
    ours, spawned = _metrics(out)[1], _metrics(root / "fsdp2-nft")[1]
    for key in ("loss", "reward_mean", "reward_std", "grad_norm"):
        assert ours[key] == spawned[key], key
    _assert_lora_close(out / "lora", root / "fsdp2-nft" / "checkpoints" / "step-000001" / "lora", exact=True)
