"""DiffusionNFT's v_old from the update's own forward (``objective.nft.fuse_old_forward``): where the sampling
policy is the current one and the iteration makes one update, the fused step gives the separate forward's loss,
gradients and weights; where it cannot apply it falls back (auto) or is refused (on)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

CONFIG = Path(__file__).resolve().parents[2] / "train" / "configs" / "tiny_kontext.yaml"


def one_step(tiny_kontext_dir, edit_dataset_dir, out, extra, monkeypatch):
    """One NFT iteration (2 micro-batches x 2 trained steps, reference term on); returns (the gradients at the
    update, the updated trained weights, the logged metrics, the number of transformer forwards)."""
    from train.adapters.flux_kontext import FluxKontextAdapter
    from train.main import load_config
    from train.parallel import DataParallel
    from train.trainers import TRAINERS

    grads, forwards = {}, []
    clip, velocity = DataParallel.clip_grad_norm, FluxKontextAdapter.velocity

    def capture(self, model, max_norm):
        grads.update({n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None})
        return clip(self, model, max_norm)

    def counted(self, *args, **kwargs):
        forwards.append(1)
        return velocity(self, *args, **kwargs)

    monkeypatch.setattr(DataParallel, "clip_grad_norm", capture)
    monkeypatch.setattr(FluxKontextAdapter, "velocity", counted)
    config = load_config(str(CONFIG), [
        "objective.name=nft", "objective.nft.ref_weight=0.1", f"model.path={tiny_kontext_dir}",
        f"data.dataset={edit_dataset_dir}", f"output_dir={out}", "train.max_steps=1", "train.groups_per_step=1",
        "train.group_size=2", "train.micro_batch_size=1", "train.seed=1", "sampler.num_steps=3",
        "sampler.sde_window=[0, 3]", "sampler.train_steps=2", "eval.every=0", "checkpoint.every=0",
        "logging.progress=false", "logging.tensorboard=false", *extra])
    trainer = TRAINERS.get("nft")(config)
    trainer.fit()
    weights = {n: p.detach().clone() for n, p in trainer.adapter.transformer.named_parameters() if p.requires_grad}
    metrics = json.loads((Path(out) / "metrics.jsonl").read_text().splitlines()[0])
    return grads, weights, metrics, len(forwards)


def test_fused_old_forward_gives_the_separate_forwards_update(tiny_kontext_dir, edit_dataset_dir, tmp_path,
                                                              monkeypatch):
    g_off, w_off, m_off, n_off = one_step(tiny_kontext_dir, edit_dataset_dir, tmp_path / "off",
                                          ["objective.nft.fuse_old_forward=off"], monkeypatch)
    g_on, w_on, m_on, n_on = one_step(tiny_kontext_dir, edit_dataset_dir, tmp_path / "auto", [], monkeypatch)
    assert (m_off["fused_old_forward"], m_on["fused_old_forward"]) == (0.0, 1.0)
    assert n_off - n_on == 4  # one forward less per (micro-batch, trained step) unit: 2 x 2
    assert m_on["loss"] == m_off["loss"]  # the same numbers: v_old is the same forward's value
    assert g_off.keys() == g_on.keys() and g_off
    for name, grad in g_off.items():
        assert torch.equal(g_on[name], grad), name
    for name, weight in w_off.items():
        assert torch.equal(w_on[name], weight), name
    assert any(float(g.abs().max()) > 0 for g in g_off.values())  # a non-trivial update was compared


@pytest.mark.parametrize("extra, reason", [
    (["objective.nft.old_decay_rate=0.1", "objective.nft.old_decay_max=0.5"], "lags"),
    (["optim.gradient_accumulation=1"], "gradient_accumulation")])
def test_fusion_falls_back_where_v_old_differs_and_on_is_refused(tiny_kontext_dir, edit_dataset_dir, tmp_path,
                                                                monkeypatch, extra, reason):
    from editkit.errors import ConfigError

    _, _, metrics, _ = one_step(tiny_kontext_dir, edit_dataset_dir, tmp_path / "auto", extra, monkeypatch)
    assert metrics["fused_old_forward"] == 0.0
    with pytest.raises(ConfigError, match=reason):
        one_step(tiny_kontext_dir, edit_dataset_dir, tmp_path / "on", [*extra, "objective.nft.fuse_old_forward=on"],
                 monkeypatch)
