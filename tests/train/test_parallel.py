"""train.parallel on 2 gloo CPU processes: FSDP2-sharded LoRA training of tiny FLUX / Qwen-Image transformers equals
the unsharded (DDP-equivalent) computation, and the LoRA / optimizer state moves between the two formats exactly.

Reference: each rank also trains an unsharded copy on BOTH ranks' inputs (loss = mean over ranks), which is what
DDP computes. Tolerances (tests.support.numerics, float32): forward and backward run the same kernels on the same
values; what differs is the order of float sums (the gradient norm is summed per shard, then over ranks; the
reduce-scatter averages before summing), i.e. a random walk over the GRAD_TERMS terms of a LoRA gradient, fed back
once per update; AdamW's normalisation can amplify it where the second moment is tiny, so the absolute part is
relative to the largest LoRA value (scale), not to each element. A fixed atol of 1e-7 failed on an AVX-512/AMX
Xeon (1.79e-7 after the third update): kernels there sum in another order."""
from __future__ import annotations

import copy

import pytest
import torch

from tests.support.gloo import run_ranks
from tests.support.numerics import assert_close, assert_exact, assert_states_close, skip_if_forced_capability_unsupported

# one LoRA gradient element sums 2 ranks × 2 micro-batches × 2 samples × 22 tokens (flux: 16 image + 6 text; qwen:
# 16 + 5) = 176 terms, which the sharded run adds in another order
GRAD_TERMS = 2 * 2 * 2 * 22
UPDATES = 2
MAX_NORM = 1e-3


def _tiny_transformer(kind: str, lora_seed: int = 0, dtype=torch.float32):
    """The same frozen base every call; the LoRA's initial values depend on ``lora_seed``."""
    from diffusers import FluxTransformer2DModel, QwenImageTransformer2DModel
    from peft import LoraConfig

    torch.manual_seed(0)
    if kind == "flux":
        model = FluxTransformer2DModel(patch_size=1, in_channels=16, num_layers=2, num_single_layers=2,
                                       attention_head_dim=16, num_attention_heads=2, joint_attention_dim=32,
                                       pooled_projection_dim=32, guidance_embeds=True, axes_dims_rope=(4, 6, 6))
    else:
        model = QwenImageTransformer2DModel(patch_size=2, in_channels=16, out_channels=4, num_layers=2,
                                            attention_head_dim=16, num_attention_heads=2, joint_attention_dim=32,
                                            axes_dims_rope=(4, 6, 6))
    model.to(dtype).requires_grad_(False)
    model.add_adapter(LoraConfig(r=4, lora_alpha=4, init_lora_weights="gaussian",
                                 target_modules=["to_k", "to_q", "to_v", "to_out.0"]))
    torch.manual_seed(lora_seed)
    for p in model.parameters():
        if p.requires_grad:
            p.data = p.data.float()
            torch.nn.init.normal_(p.data, std=0.05)  # lora_B nonzero too: every LoRA tensor gets a gradient at once
    return model


def _inputs(kind: str, seed: int, batch: int = 2):
    g = torch.Generator().manual_seed(seed)
    if kind == "flux":
        tokens, text = 16, 6
        return dict(hidden_states=torch.randn(batch, tokens, 16, generator=g),
                    encoder_hidden_states=torch.randn(batch, text, 32, generator=g),
                    pooled_projections=torch.randn(batch, 32, generator=g), timestep=torch.rand(batch, generator=g),
                    guidance=torch.full((batch,), 2.5), img_ids=torch.zeros(tokens, 3), txt_ids=torch.zeros(text, 3),
                    return_dict=False)
    return dict(hidden_states=torch.randn(batch, 16, 16, generator=g),
                encoder_hidden_states=torch.randn(batch, 5, 32, generator=g),
                timestep=torch.rand(batch, generator=g), img_shapes=[[(1, 4, 4)]] * batch, return_dict=False)


def _loss(model, inputs):
    return model(**inputs)[0].float().pow(2).mean()


def _optimizer(params):
    return torch.optim.AdamW(params, lr=1e-2, weight_decay=1e-4)


def _train_steps(kind, rank, world, model, optimizer, parallel, steps, sharded: bool, micro: int = 2):
    """``steps`` updates of ``micro`` accumulated micro-batches; unsharded: every rank's inputs, averaged."""
    losses, norms = [], []
    for step in range(steps):
        for k in range(micro):
            ranks = [rank] if sharded else range(world)
            loss = sum(_loss(model, _inputs(kind, 1000 * step + 10 * k + r)) for r in ranks) / len(ranks)
            losses.append(float(loss.detach()))
            context = parallel.no_sync(model) if sharded and k < micro - 1 else torch.enable_grad()
            with context:
                (loss / micro).backward()
        if sharded:
            norms.append(parallel.clip_grad_norm(model, MAX_NORM))
        else:
            norms.append(float(torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.grad is not None],
                                                              MAX_NORM)))
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return losses, norms


def _fsdp_worker(rank, world, kind, checkpointing):
    import torch.distributed as dist

    from train.parallel import (FSDPConfig, FullyShardedParallel, full_lora_state, full_optimizer_state,
                                load_lora_state, load_optimizer_state, peft_key_map)

    class _Acc:  # the two attributes FullyShardedParallel reads from accelerate's Accelerator
        device, mixed_precision = torch.device("cpu"), "no"

    parallel = FullyShardedParallel(_Acc(), FSDPConfig(), None)
    base = _tiny_transformer(kind)
    if checkpointing:
        base.enable_gradient_checkpointing()
    reference = copy.deepcopy(base)
    ref_optim = _optimizer([p for p in reference.parameters() if p.requires_grad])
    sharded, optim = parallel.prepare(copy.deepcopy(base), _optimizer)
    from torch.distributed.fsdp import FSDPModule

    result = {"blocks": sum(isinstance(m, FSDPModule) for m in sharded.modules()) - 1}  # minus the root
    result["ref"] = _train_steps(kind, rank, world, reference, ref_optim, None, 2, sharded=False)
    result["fsdp"] = _train_steps(kind, rank, world, sharded, optim, parallel, 2, sharded=True)
    result["local_numel"] = sum(p.to_local().numel() for p in sharded.parameters() if p.requires_grad)
    result["ref_lora"] = full_lora_state(reference)
    result["fsdp_lora"] = full_lora_state(sharded)  # rank 0 only
    result["ref_optim"] = full_optimizer_state(reference, ref_optim)
    result["fsdp_optim"] = full_optimizer_state(sharded, optim)

    # DDP-format state (the unsharded copy's) -> a fresh sharded model, FSDP2 state -> a fresh unsharded one:
    # one more update each must equal the update of the model the state came from, exactly
    keys = peft_key_map(reference)
    to_peft = lambda state: {keys[name]: tensor for name, tensor in state.items()}  # noqa: E731
    shared = [result["ref_lora"], result["ref_optim"], result["fsdp_lora"], result["fsdp_optim"]]
    dist.broadcast_object_list(shared, src=0)  # the main process's states, as if from a file every rank reads
    fresh_sharded, fresh_optim = parallel.prepare(_tiny_transformer(kind, lora_seed=1), _optimizer)
    load_lora_state(fresh_sharded, to_peft(shared[0]))
    load_optimizer_state(fresh_sharded, fresh_optim, shared[1])
    result["loaded"] = full_lora_state(fresh_sharded), full_optimizer_state(fresh_sharded, fresh_optim)
    fresh_plain = _tiny_transformer(kind, lora_seed=2)
    plain_optim = _optimizer([p for p in fresh_plain.parameters() if p.requires_grad])
    load_lora_state(fresh_plain, to_peft(shared[2]))
    load_optimizer_state(fresh_plain, plain_optim, shared[3])
    for model, opt, is_sharded in ((reference, ref_optim, False), (fresh_sharded, fresh_optim, True),
                                   (sharded, optim, True), (fresh_plain, plain_optim, False)):
        _train_steps(kind, rank, world, model, opt, parallel, 1, sharded=is_sharded)
    result["third"] = [full_lora_state(m) for m in (reference, fresh_sharded, sharded, fresh_plain)]
    return result


def _close(a: dict, b: dict, *, steps: int | None = None, exact: bool = False):
    """LoRA states: bit-identical (``exact``) or equal up to GRAD_TERMS-long sums in another order, ``steps``
    updates over."""
    assert_states_close(a, b, exact=exact, dtype=torch.float32, accumulations=GRAD_TERMS, steps=steps,
                        why="a state round-trip copies values" if exact
                        else f"LoRA gradients summed in another order, {steps} AdamW updates")


def _optim_close(a: dict, b: dict, *, steps: int | None = None, exact: bool = False):
    assert a["state"].keys() == b["state"].keys() and a["state"]
    for name in a["state"]:
        for slot, value in a["state"][name].items():
            if exact or slot == "step":
                assert_exact(value, b["state"][name][slot], why="a state round-trip copies values; step counts")
            else:  # exp_avg_sq is a sum of squared gradients: twice the relative error of a gradient
                assert_close(value, b["state"][name][slot], dtype=torch.float32, accumulations=GRAD_TERMS,
                             steps=2 * steps, msg=f"{name}.{slot}",
                             why=f"Adam moments of gradients summed in another order, {steps} updates")
    assert [g["params"] for g in a["param_groups"]] == [g["params"] for g in b["param_groups"]]


def _full_tensor_worker(rank, world):
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import Shard, distribute_tensor

    from train.parallel import copy_full_into, full_tensor

    full = torch.arange(15.0).reshape(5, 3)  # 5 rows over 2 ranks: uneven shards, as FSDP2 pads them
    shard = distribute_tensor(torch.zeros(5, 3), init_device_mesh("cpu", (world,)), [Shard(0)])
    copy_full_into(shard, full)
    plain = torch.zeros(5, 3)
    copy_full_into(plain, full)
    return {"local": shard.to_local().clone(), "gathered": full_tensor(shard), "plain": plain}


def _all_scenarios(rank, world):
    """One spawn for every scenario: starting two processes costs more than the scenarios themselves."""
    return {"flux": _fsdp_worker(rank, world, "flux", False), "qwen": _fsdp_worker(rank, world, "qwen", True),
            "mixed": _bf16_or_error(_mixed_worker, rank, world), "full_tensor": _full_tensor_worker(rank, world)}


def _bf16_or_error(worker, rank, world):
    """The bf16 scenario's result, or torch's RuntimeError as text: a forced ATEN_CPU_CAPABILITY can make torch
    refuse bf16 kernels (tests.support.numerics), and that must not take the float32 scenarios down with it."""
    try:
        return worker(rank, world)
    except RuntimeError as exc:
        return {"error": f"RuntimeError: {exc}"}


@pytest.fixture(scope="module")
def ranks():
    return run_ranks(_all_scenarios, 2)


@pytest.mark.parity
@pytest.mark.parametrize("kind", ["flux", "qwen"])  # qwen: with gradient checkpointing
def test_fsdp2_sharded_training_equals_unsharded(ranks, kind):
    rank0, rank1 = ranks[0][kind], ranks[1][kind]
    assert rank0["blocks"] == (4 if kind == "flux" else 2)
    (ref_losses, ref_norms), (losses, norms) = rank0["ref"], rank0["fsdp"]
    # per-rank losses of the sharded run, averaged over ranks = the unsharded run's (DDP's) losses
    mean_losses = [(a + b) / 2 for a, b in zip(rank0["fsdp"][0], rank1["fsdp"][0])]
    # before any update: the same per-rank numbers, averaged over 2 ranks in another order
    assert_close(mean_losses[:2], ref_losses[:2], dtype=torch.float32, accumulations=2,
                 why="the same per-rank losses, (a + b) / 2 against sum / 2")
    assert_close(mean_losses, ref_losses, dtype=torch.float32, accumulations=GRAD_TERMS, steps=UPDATES,
                 why="losses after updates from gradients summed in another order")
    # the norm is a sum of squares over every LoRA gradient element, per shard then over ranks
    assert_close(norms, ref_norms, dtype=torch.float32, accumulations=GRAD_TERMS, steps=UPDATES,
                 why="norms of gradients summed in another order, the squares summed per shard")
    assert rank1["fsdp"][1] == norms  # every rank: one norm
    assert min(norms) > MAX_NORM  # clipping was active, so the sharded norm computation matters
    total = sum(t.numel() for t in rank0["ref_lora"].values())
    assert rank0["local_numel"] + rank1["local_numel"] == total and rank0["local_numel"] < total  # really sharded
    assert rank1["fsdp_lora"] == {}  # gathered onto the main process only
    _close(rank0["fsdp_lora"], rank0["ref_lora"], steps=UPDATES)
    _optim_close(rank0["fsdp_optim"], rank0["ref_optim"], steps=UPDATES)
    loaded_lora, loaded_optim = rank0["loaded"]  # the DDP-format state, loaded sharded and gathered back: exact
    _close(loaded_lora, rank0["ref_lora"], exact=True)
    _optim_close(loaded_optim, rank0["ref_optim"], exact=True)
    reference, from_ddp_state, sharded, from_fsdp_state = rank0["third"]  # one more update after the switch
    _close(from_ddp_state, reference, steps=1)  # the same state, one update apart in summation order
    _close(from_fsdp_state, sharded, steps=1)
    _close(sharded, reference, steps=UPDATES + 1)


def _mixed_worker(rank, world):
    from train.parallel import FSDPConfig, FullyShardedParallel, full_lora_state, transformer_blocks

    class _Acc:
        device, mixed_precision = torch.device("cpu"), "bf16"

    # bf16 frozen base + fp32 LoRA, computed in bf16, shards offloaded to (pinned-less) CPU memory
    parallel = FullyShardedParallel(_Acc(), FSDPConfig(cpu_offload=True), torch.bfloat16)
    model, optim = parallel.prepare(_tiny_transformer("flux", dtype=torch.bfloat16), _optimizer)
    blocks = len(transformer_blocks(model))
    losses, norms = _train_steps("flux", rank, world, model, optim, parallel, 2, sharded=True)
    lora = {n: p for n, p in model.named_parameters() if p.requires_grad}
    frozen = {n: p for n, p in model.named_parameters() if not p.requires_grad}
    state = full_lora_state(model)
    return {"losses": losses, "norms": norms, "blocks": blocks,
            "lora_dtypes": {p.to_local().dtype for p in lora.values()},
            "frozen_dtypes": {p.to_local().dtype for p in frozen.values()},
            "devices": {p.to_local().device.type for p in model.parameters()},
            "state_dtypes": {t.dtype for t in state.values()}, "state_size": len(state), "lora_size": len(lora)}


def test_fsdp2_bf16_base_fp32_lora_with_cpu_offload(ranks):
    rank0, rank1 = ranks[0]["mixed"], ranks[1]["mixed"]
    with skip_if_forced_capability_unsupported():  # skips only for torch's forced-capability bf16 refusal
        if "error" in rank0 or "error" in rank1:
            raise RuntimeError(rank0.get("error") or rank1.get("error"))
    assert rank0["lora_dtypes"] == {torch.float32} and rank0["frozen_dtypes"] == {torch.bfloat16}
    assert rank0["devices"] == {"cpu"} and rank0["state_dtypes"] == {torch.float32}
    assert rank0["state_size"] == rank0["lora_size"] > 0 and rank0["blocks"] == 4
    assert all(torch.isfinite(torch.tensor(rank0["losses"] + rank0["norms"])))
    assert rank0["norms"] == rank1["norms"]


def test_full_tensor_and_copy_full_into_round_trip_uneven_shards(ranks):
    full = torch.arange(15.0).reshape(5, 3)
    locals_ = [rank["full_tensor"]["local"] for rank in ranks]
    assert torch.equal(locals_[0], full[:3]) and torch.equal(locals_[1], full[3:])
    for rank in ranks:
        assert torch.equal(rank["full_tensor"]["gathered"], full) and torch.equal(rank["full_tensor"]["plain"], full)


def test_peft_key_map_matches_saved_lora_keys():
    from peft.utils import get_peft_model_state_dict

    from train.parallel import peft_key_map

    model = _tiny_transformer("flux")
    mapping = peft_key_map(model)
    assert sorted(mapping.values()) == sorted(get_peft_model_state_dict(model))
    assert all(".default" in name and ".default" not in key for name, key in mapping.items())


def test_transformer_blocks_needs_block_classes():
    from train.parallel import transformer_blocks

    assert len(transformer_blocks(_tiny_transformer("qwen"))) == 2
    with pytest.raises(ValueError, match="no transformer block classes"):
        transformer_blocks(torch.nn.Linear(2, 2))


def test_unknown_parallelism_and_fp16_are_refused():
    from train.parallel import FSDPConfig, build_parallel

    class _Acc:
        device, mixed_precision = torch.device("cpu"), "fp16"

    with pytest.raises(ValueError, match="must be one of"):
        build_parallel("zero3", _Acc(), FSDPConfig(), None)
    with pytest.raises(ValueError, match="fp16"):
        build_parallel("fsdp2", _Acc(), FSDPConfig(), torch.float16)


def test_parallelism_is_checked_at_load_time():
    from editkit.errors import ConfigError
    from train.config import load_config

    config = load_config(None, ["train.parallelism=fsdp2", "train.fsdp.cpu_offload=true"])
    assert config.train.parallelism == "fsdp2" and config.train.fsdp.cpu_offload
    with pytest.raises(ConfigError, match="train.parallelism must be one of"):
        load_config(None, ["train.parallelism=zero3"])


@pytest.mark.parametrize("offload", [False, True])
def test_offloaded_text_encoders_visit_the_device_only_to_encode(tiny_kontext_dir, offload):
    from train.adapters import build_adapter
    from train.config import ModelConfig

    adapter = build_adapter(ModelConfig(path=str(tiny_kontext_dir), max_sequence_length=16,
                                        offload_text_encoders=offload), torch.device("cpu"), torch.float32)
    moves = []
    for name in ("text_encoder", "text_encoder_2"):
        module = getattr(adapter.pipe, name)
        original = module.to
        def spy(*args, _name=name, _to=original, **kwargs):
            moves.append((_name, str(args[0])))
            return _to(*args, **kwargs)

        module.to = spy
        module.register_forward_pre_hook(lambda *_, _name=name: moves.append((_name, "forward")))
    cond = adapter.condition(["make it red"], torch.rand(1, 3, 16, 16))
    # (the device is the CPU here, so "to the device" reads cpu too: what is checked is when they move)
    there = [("text_encoder", "cpu"), ("text_encoder_2", "cpu")] if offload else []
    assert moves == [*there, ("text_encoder", "forward"), ("text_encoder_2", "forward"), *there]
    assert cond.per_sample["prompt_embeds"].shape[0] == 1


def test_multinode_launch_configs():
    import subprocess
    from pathlib import Path

    from accelerate.commands.config.config_args import load_config_from_file

    configs = Path(__file__).resolve().parents[2] / "train" / "configs"
    accelerate = load_config_from_file(str(configs / "accelerate_multinode.yaml"))
    assert accelerate.distributed_type.value == "MULTI_GPU" and accelerate.num_machines == 2
    assert accelerate.num_processes == 16 and accelerate.rdzv_backend == "c10d"
    sbatch = configs / "slurm_multinode.sbatch"
    subprocess.run(["bash", "-n", str(sbatch)], check=True)  # valid shell
    text = sbatch.read_text()
    assert "--rdzv-backend c10d" in text and "train.parallelism=fsdp2" in text and "--nnodes" in text
