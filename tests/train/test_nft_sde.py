"""NFT rollouts: deterministic ODE by default (CoCoEdit); with ``sampler.nft_sde`` the window's steps are the
Flow-SDE, so samples that share the initial noise still differ, and the rest of the trajectory is the same ODE."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.support.numerics import assert_close, is_close
from train.config import load_config

CONFIG = Path(__file__).resolve().parents[2] / "train" / "configs" / "tiny_kontext.yaml"
# the tiny Kontext transformer at 32 px: per layer an inner-dimension (32) dot product and a softmax over 256 target
# + 256 condition + 32 text keys; 1 double + 1 single block
CHAIN = (32 + 2 * 256 + 32) * 2


def _finals(tiny_kontext_dir, edit_dataset_dir, tmp_path, *overrides):
    from train.trainers.nft import NFTTrainer

    config = load_config(CONFIG, [f"model.path={tiny_kontext_dir}", f"data.dataset={edit_dataset_dir}",
                                  f"output_dir={tmp_path}", "logging.progress=false",
                                  "objective.regularizer.enabled=false", "sampler.num_steps=4",
                                  "sampler.sde_window=[0, 2]", *overrides])
    trainer = NFTTrainer(config)
    batch = trainer.make_batch(1)
    noise, _ = trainer.initial_noise([7] * len(batch.seeds))  # every sample starts from the same noise

    def rollout_noise(batch, step):  # same initial noise, a different generator (SDE noise) per sample
        return noise.clone(), [torch.Generator().manual_seed(100 + i) for i in range(len(batch.seeds))]

    trainer.rollout_noise = rollout_noise
    batch.cond = batch.cond.select(torch.zeros(len(batch.seeds), dtype=torch.long))  # and the same prompt
    trainer.sample(batch, 1)
    return batch.samples.final


def test_nft_rollouts_are_deterministic_by_default_and_stochastic_with_nft_sde(tiny_kontext_dir, edit_dataset_dir,
                                                                               tmp_path):
    ode = _finals(tiny_kontext_dir, edit_dataset_dir, tmp_path / "ode")
    # same noise, same prompt: one image (rows of one batch: kernels may block each row differently)
    assert_close(ode, ode[:1].expand_as(ode), dtype=torch.float32, accumulations=CHAIN, steps=4,
                 why="rows of one batch through the float32 transformer (CHAIN), 4 denoising steps")
    sde = _finals(tiny_kontext_dir, edit_dataset_dir, tmp_path / "sde", "sampler.nft_sde=true",
                  "sampler.noise_level=0.7")
    spread = (sde - sde[:1]).abs().flatten(1).amax(1)
    assert (spread[1:] > 1e-3).all()  # the SDE steps make every sample its own
    assert not is_close(sde[0], ode[0], dtype=torch.float32, accumulations=CHAIN, steps=4,
                        why="the SDE noise (level 0.7) moves the image far beyond float32 rounding")


def test_nft_sde_needs_the_euler_solver():
    with pytest.raises(ValueError, match="nft_sde needs sampler.solver: euler"):
        load_config(None, ["sampler.nft_sde=true", "sampler.solver=dpm2"])
