"""How the transformer is spread over processes: ``ddp`` (a full copy per process, accelerate's DDP) or ``fsdp2``
(``torch.distributed.fsdp.fully_shard`` per transformer block and on the root: each process holds 1/N of the frozen
base and of the LoRA, and all-gathers a block's weights just before the block runs).

Both strategies expose the same few operations the trainer needs (prepare, gradient-sync control, clipping), and
the state helpers at the bottom (LoRA, optimizer) read and write ONE format under both — full tensors keyed by the
parameter names of the unwrapped transformer — so a checkpoint written under DDP resumes under FSDP2 and back.

Under FSDP2 every forward is a collective (the all-gathers): every process must run the same number of transformer
calls in the same order. Rollouts satisfy that (each process holds the same number of samples); evaluation, which
DDP runs on the main process only, runs on every process (``collective_forward``).
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator

import torch
import torch.distributed as dist

PARALLELISMS = ("ddp", "fsdp2")


@dataclass
class FSDPConfig:
    cpu_offload: bool = False
    """keep the parameter shards (and their gradients, optimizer state) in CPU memory"""
    reshard_after_forward: bool = True
    """free a block's gathered weights after its forward (re-gathered in backward)"""


# ---------------------------------------------------------------------------------------------------- sharding
def ensure_process_group(device: torch.device) -> None:
    """FSDP2 needs a process group even for one process (``python -m train`` without a launcher): a 1-rank group
    on an in-memory store then; launchers (torchrun, accelerate launch) have created the real one already."""
    if dist.is_available() and dist.is_initialized():
        return
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1)


def transformer_blocks(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The repeated blocks of a diffusers transformer: the classes its ``_no_split_modules`` names (FLUX: the
    dual- and single-stream blocks; Qwen-Image: its MMDiT block)."""
    names = set(getattr(model, "_no_split_modules", None) or ())
    # by MRO: after fully_shard a block's class is a subclass named FSDP<name>
    blocks = [m for m in model.modules() if m is not model and any(c.__name__ in names for c in type(m).__mro__)]
    if not blocks:
        raise ValueError(f"{type(model).__name__} names no transformer block classes (_no_split_modules): "
                         "cannot shard it per block")
    return blocks


def shard_model(model: torch.nn.Module, device: torch.device, config: FSDPConfig,
                param_dtype: torch.dtype | None = None) -> torch.nn.Module:
    """``fully_shard`` each block, then the root (in place; the module becomes an ``FSDPModule``).

    ``param_dtype`` (e.g. bf16 on GPU): the dtype weights are gathered and computed in; the sharded LoRA stays
    float32 (the master weights) and gradients are reduced in float32. None: compute in the stored dtypes."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import CPUOffloadPolicy, MixedPrecisionPolicy, OffloadPolicy, fully_shard

    ensure_process_group(device)
    mesh = init_device_mesh(device.type, (dist.get_world_size(),))
    mixed = MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=torch.float32 if param_dtype else None)
    offload = CPUOffloadPolicy(pin_memory=device.type == "cuda") if config.cpu_offload else OffloadPolicy()
    options = dict(mesh=mesh, mp_policy=mixed, offload_policy=offload)
    for block in transformer_blocks(model):
        fully_shard(block, reshard_after_forward=config.reshard_after_forward, **options)
    # the root too (fully_shard's default keeps the root gathered after forward): between transformer calls every
    # parameter the trainer sees is then its shard, e.g. for the lagged NFT policy's in-place copies
    fully_shard(model, reshard_after_forward=config.reshard_after_forward, **options)
    return model


def is_sharded(model: torch.nn.Module) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


# ---------------------------------------------------------------------------------------------------- strategies
class DataParallel:
    """accelerate's DDP (or a single process): every process keeps the whole model."""

    name = "ddp"
    collective_forward = False

    def __init__(self, accelerator):
        self.accelerator = accelerator

    def prepare(self, transformer: torch.nn.Module, make_optimizer: Callable) -> tuple[torch.nn.Module, object]:
        optimizer = make_optimizer([p for p in transformer.parameters() if p.requires_grad])
        return self.accelerator.prepare(transformer, optimizer)

    def no_sync(self, model):
        return self.accelerator.no_sync(model)

    def clip_grad_norm(self, model: torch.nn.Module, max_norm: float) -> float:
        return float(self.accelerator.clip_grad_norm_(model.parameters(), max_norm))


class FullyShardedParallel:
    """FSDP2 over all processes (one mesh dimension: every process of every node holds one shard)."""

    name = "fsdp2"
    collective_forward = True

    def __init__(self, accelerator, config: FSDPConfig, param_dtype: torch.dtype | None):
        if accelerator.mixed_precision == "fp16":
            raise ValueError("train.parallelism=fsdp2 supports mixed_precision bf16 or no (fp16 would need a sharded "
                             "gradient scaler, which is not implemented)")
        self.accelerator, self.config, self.param_dtype = accelerator, config, param_dtype

    def prepare(self, transformer: torch.nn.Module, make_optimizer: Callable) -> tuple[torch.nn.Module, object]:
        model = shard_model(transformer, self.accelerator.device, self.config, self.param_dtype)
        # after sharding: the optimizer must hold the sharded (DTensor) parameters fully_shard put in place
        return model, make_optimizer([p for p in model.parameters() if p.requires_grad])

    @contextmanager
    def no_sync(self, model) -> Iterator[None]:
        """Accumulate unsharded gradients locally; the update's last backward reduce-scatters them all at once
        (what DDP's ``no_sync`` does, so the two sum the same numbers)."""
        model.set_requires_gradient_sync(False)
        try:
            yield
        finally:
            model.set_requires_gradient_sync(True)

    def clip_grad_norm(self, model: torch.nn.Module, max_norm: float) -> float:
        norm = torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.grad is not None], max_norm)
        return float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm)


def build_parallel(name: str, accelerator, fsdp: FSDPConfig, param_dtype: torch.dtype | None):
    if name == "ddp":
        return DataParallel(accelerator)
    if name == "fsdp2":
        return FullyShardedParallel(accelerator, fsdp, param_dtype if param_dtype != torch.float32 else None)
    raise ValueError(f"train.parallelism must be one of {PARALLELISMS}, got {name!r}")


# ---------------------------------------------------------------------------------------------------- state
def full_tensor(value: torch.Tensor) -> torch.Tensor:
    """A parameter-shaped tensor's full value: gathered if it is a shard (a DTensor; collective), else itself."""
    from torch.distributed.tensor import DTensor

    if not isinstance(value, DTensor):
        return value
    mesh = value.device_mesh  # CPU-offloaded shards travel over the mesh's device (NCCL has no CPU tensors)
    local = value.to_local().to(mesh.device_type)
    return DTensor.from_local(local, mesh, value.placements, run_check=False, shape=value.shape,
                              stride=value.stride()).full_tensor()


def copy_full_into(target: torch.Tensor, full: torch.Tensor) -> None:
    """``target`` (a parameter-shaped tensor, sharded or not) takes the values of the full tensor ``full`` (every
    process passes the same one; a shard keeps its own part, no communication)."""
    from torch.distributed.tensor import DTensor, distribute_tensor

    if isinstance(target, DTensor):
        local = target.to_local()
        full = distribute_tensor(full.to(local.device, local.dtype), target.device_mesh, target.placements,
                                 src_data_rank=None)
    target.copy_(full)


def _options(**kwargs):
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=True, **kwargs)


def _copied(state):
    """Fresh tensors: on CPU the gathered "full" state may alias the live parameters / optimizer moments."""
    from torch.utils._pytree import tree_map

    return tree_map(lambda v: v.detach().clone() if isinstance(v, torch.Tensor) else v, state)


def _inner(optimizer):
    return getattr(optimizer, "optimizer", optimizer)  # accelerate's AcceleratedOptimizer wraps the torch one


def full_lora_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The trainable (LoRA) parameters as full CPU tensors keyed by parameter name. Collective under FSDP2
    (each block is gathered in turn); the values are on the main process only, other processes get {}."""
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    if not is_sharded(model):
        return {n: p.detach().cpu().clone() for n, p in model.named_parameters() if p.requires_grad}
    return _copied(get_model_state_dict(model, options=_options(cpu_offload=True, ignore_frozen_params=True)))


def peft_key_map(model: torch.nn.Module) -> dict[str, str]:
    """Parameter name -> key in a saved PEFT LoRA file, as peft itself maps them (adapter name dropped)."""
    from peft.utils import get_peft_model_state_dict

    names = [n for n, p in model.named_parameters() if p.requires_grad]
    tagged = get_peft_model_state_dict(model, state_dict={n: torch.tensor(i) for i, n in enumerate(names)})
    return {names[int(index)]: key for key, index in tagged.items()}


def load_lora_state(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Set the LoRA from full tensors (keys as in a saved PEFT file, without the ``transformer.`` prefix); every
    process passes the same full state, each keeps its shard. Exact values."""
    from torch.distributed.checkpoint.state_dict import set_model_state_dict

    by_key = {key: name for name, key in peft_key_map(model).items()}
    unexpected = sorted(set(state) - set(by_key))
    missing = sorted(set(by_key) - set(state))
    if unexpected or missing:
        raise ValueError(f"LoRA does not fit this model: unexpected {unexpected[:5]}, missing {missing[:5]}")
    values = {by_key[key]: tensor for key, tensor in state.items()}
    set_model_state_dict(model, values, options=_options(strict=False))


def load_lora_files(adapter, directory) -> None:
    """Load a LoRA saved by ``adapter.save_lora`` (every process reads the file): the adapter's own loader on a
    whole model, :func:`load_lora_state` on a sharded one."""
    from pathlib import Path

    from safetensors.torch import load_file

    if not is_sharded(adapter.transformer):
        adapter.load_lora(Path(directory))
        return
    state = load_file(str(Path(directory) / "pytorch_lora_weights.safetensors"))
    load_lora_state(adapter.transformer, {k.removeprefix("transformer."): v for k, v in state.items()})


def full_optimizer_state(model: torch.nn.Module, optimizer) -> dict:
    """The optimizer's state as full CPU tensors keyed by parameter name (DDP and FSDP2 alike). Collective; the
    values are on the main process only under FSDP2."""
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    return _copied(get_optimizer_state_dict(model, _inner(optimizer), options=_options(cpu_offload=True)))


def load_optimizer_state(model: torch.nn.Module, optimizer, state: dict) -> None:
    """Restore :func:`full_optimizer_state` output (every process passes the full state). A state keyed by
    parameter index (``optimizer.state_dict()``, older checkpoints) loads as such, unsharded runs only."""
    from torch.distributed.checkpoint.state_dict import set_optimizer_state_dict

    state = _copied(state)  # the optimizer adopts the tensors it is given: never the caller's
    groups = state.get("param_groups", [])
    if groups and groups[0].get("params") and isinstance(groups[0]["params"][0], int):
        if is_sharded(model):
            raise ValueError("this checkpoint's optimizer state is keyed by parameter index (an older format): "
                             "resume it with train.parallelism=ddp")
        _inner(optimizer).load_state_dict(state)
        return
    set_optimizer_state_dict(model, _inner(optimizer), state, options=_options())
    # its flatten/unflatten round trip turns tuples (AdamW's betas) into lists: restore the hyperparameters as saved
    for group, saved in zip(_inner(optimizer).param_groups, state["param_groups"]):
        group.update({key: value for key, value in saved.items() if key != "params"})
