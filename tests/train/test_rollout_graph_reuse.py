"""GRPO's on-policy update back-propagates through the rollout's kept forwards (``train.reuse_rollout_graph``):
the same rewards, gradients and updated LoRA weights as recomputing those forwards; the memory guard falls back to
recomputation per (micro-batch, step) unit; settings where reuse cannot apply are refused when it is forced."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.support.numerics import assert_close

CONFIG = Path(__file__).resolve().parents[2] / "train" / "configs" / "tiny_kontext.yaml"


def one_step(tiny_kontext_dir, edit_dataset_dir, out, extra, monkeypatch):
    """One GRPO iteration (2 micro-batches × 2 trained SDE steps = 4 backward units, KL and GRPO-Guard on); returns
    (the gradients at the update, the updated trained weights, the logged metrics)."""
    import json

    from train.main import load_config
    from train.parallel import DataParallel
    from train.trainers import TRAINERS

    grads = {}
    clip = DataParallel.clip_grad_norm

    def capture(self, model, max_norm):
        grads.update({n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None})
        return clip(self, model, max_norm)

    monkeypatch.setattr(DataParallel, "clip_grad_norm", capture)
    config = load_config(str(CONFIG), [
        "objective.name=grpo", "objective.regularizer.enabled=false", "objective.grpo.kl_beta=0.1",
        "objective.grpo.guard=true", f"model.path={tiny_kontext_dir}", f"data.dataset={edit_dataset_dir}",
        f"output_dir={out}", "train.max_steps=1", "train.groups_per_step=1", "train.group_size=2",
        "train.micro_batch_size=1", "train.seed=1", "sampler.num_steps=3", "sampler.sde_window=[0, 3]",
        "sampler.train_steps=2", "eval.every=0", "checkpoint.every=0", "logging.progress=false",
        "logging.tensorboard=false", *extra])
    trainer = TRAINERS.get("grpo")(config)
    trainer.fit()
    weights = {n: p.detach().clone() for n, p in trainer.adapter.transformer.named_parameters() if p.requires_grad}
    return grads, weights, json.loads((Path(out) / "metrics.jsonl").read_text().splitlines()[0])


def test_reusing_the_rollout_graph_gives_the_recomputed_update(tiny_kontext_dir, edit_dataset_dir, tmp_path,
                                                               monkeypatch):
    runs = {mode: one_step(tiny_kontext_dir, edit_dataset_dir, tmp_path / mode, extra, monkeypatch)
            for mode, extra in {"off": ["train.reuse_rollout_graph=off"],
                                "on": ["train.reuse_rollout_graph=on"],
                                "tight": ["train.reuse_rollout_graph=auto",
                                          "train.reuse_rollout_graph_budget_gib=1e-9"]}.items()}
    (g_off, w_off, m_off), (g_on, w_on, m_on), (g_tight, _, m_tight) = runs["off"], runs["on"], runs["tight"]
    assert (m_off["reused"], m_on["reused"]) == (0.0, 1.0)
    assert m_tight["reused"] == 0.25  # the guard keeps the first forward only; the other 3 units are recomputed
    for m in (m_on, m_tight):
        assert m["reward_mean"] == m_off["reward_mean"]  # the same rollouts, bit for bit
        assert m["ratio_first"] == 1.0
    assert g_off.keys() == g_on.keys() and g_off
    why = "the same forwards and backward in float32; the loss sums 4 units of ~1e3 latent values each"
    for grads in (g_on, g_tight):
        for name, grad in g_off.items():
            assert_close(grads[name], grad, dtype=torch.float32, accumulations=4096,
                         scale=float(grad.abs().max()) + 1e-12, why=why)
    for name, weight in w_off.items():
        assert_close(w_on[name], weight, dtype=torch.float32, accumulations=4096,
                     scale=float(weight.abs().max()) + 1e-3, why=why + "; one AdamW step of lr 1e-3")
    assert any(float(g.abs().max()) > 0 for g in g_off.values())  # a non-trivial update was compared


def test_forcing_reuse_off_policy_is_refused(tiny_kontext_dir, edit_dataset_dir, tmp_path, monkeypatch):
    from editkit.errors import ConfigError

    with pytest.raises(ConfigError, match="gradient_accumulation"):
        one_step(tiny_kontext_dir, edit_dataset_dir, tmp_path / "acc", ["train.reuse_rollout_graph=on",
                                                                         "optim.gradient_accumulation=1"], monkeypatch)


@pytest.mark.slow  # inductor compiles the two block types: about a minute on 2 cores
def test_compiled_blocks_give_the_eager_update(tiny_kontext_dir, edit_dataset_dir, tmp_path, monkeypatch):
    """train.compile: the transformer's repeated blocks run torch.compile'd code (inductor's fused kernels, a float
    summation order of their own) and the rollout-graph reuse still applies; gradients match eager mode's."""
    import torch._dynamo

    torch._dynamo.reset()
    compiled_calls = []

    original = torch.nn.Module.compile

    def recording(self, *args, **kwargs):
        compiled_calls.append(type(self).__name__)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(torch.nn.Module, "compile", recording)
    g_eager, w_eager, m_eager = one_step(tiny_kontext_dir, edit_dataset_dir, tmp_path / "eager", [], monkeypatch)
    assert not compiled_calls
    g_comp, w_comp, m_comp = one_step(tiny_kontext_dir, edit_dataset_dir, tmp_path / "compiled",
                                      ["train.compile=true"], monkeypatch)
    torch._dynamo.reset()
    assert sorted(set(compiled_calls)) == ["FluxSingleTransformerBlock", "FluxTransformerBlock"]
    assert m_comp["reused"] == 1.0 and m_comp["ratio_first"] == 1.0
    why = "inductor fuses the blocks' element-wise work and sums in its own order (float32); 4 backward units"
    for name, grad in g_eager.items():
        assert_close(g_comp[name], grad, dtype=torch.float32, accumulations=4096,
                     scale=float(grad.abs().max()) + 1e-12, why=why)
    # (the updated weights are not compared: AdamW's first step is lr * g / (|g| + eps), which turns a float-rounding
    # difference of a gradient near eps into a visible one)
    assert g_comp.keys() == g_eager.keys() and w_comp.keys() == w_eager.keys()
