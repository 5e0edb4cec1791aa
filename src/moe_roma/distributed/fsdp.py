"""FSDP2 over the ranks of a torchrun job: every decoder layer's frozen weights sharded, routers replicated.

Each decoder layer is one ``fully_shard`` unit over a one-dimensional ``DeviceMesh`` (and the root
module a last one, holding the embeddings, final norm and head), so a rank keeps about 1/N of the
frozen weights and all-gathers one layer at a time. The routers are ``ignored_params``: tiny
(0.01% of the weights), they stay whole on every rank in fp32 with their AdamW state, so the
trainer's data-parallel step (sum the router gradients across ranks, one global norm, clip, step)
is the same code with or without sharding, and a checkpoint is the same file.

The model is built on the meta device on every rank, sharded, materialised on the rank's device,
and filled from rank 0's copy with ``set_model_state_dict(broadcast_from_rank0=True)``: one host
copy of the checkpoint per job, never one per rank.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedModel, PreTrainedTokenizerBase

from moe_roma.distributed.group import check_device_map, local_device, world
from moe_roma.io.errors import ModelError
from moe_roma.methods.common.prefix import decoder_layers
from moe_roma.models.discovery import MoEInfo, discover_routers
from moe_roma.models.loading import check_no_remote_code, load_model, load_tokenizer, resolve_dtype

SHARD_CHOICES = ("none", "fsdp")


def router_parameters(model: nn.Module, info: MoEInfo) -> set[nn.Parameter]:
    """Every router parameter of every MoE layer: what FSDP leaves whole on each rank."""
    return {model.get_parameter(name) for r in info.routers.values() for name in r.parameter_names}


def shard_model(model: PreTrainedModel, info: MoEInfo, mesh=None) -> None:
    """``fully_shard`` each decoder layer, then the root; routers are left out of the shards (replicated)."""
    from torch.distributed.fsdp import fully_shard

    routers = router_parameters(model, info)
    for layer in decoder_layers(model, info):
        own = {p for p in layer.parameters() if p in routers}
        fully_shard(layer, mesh=mesh, ignored_params=own or None)
    fully_shard(model, mesh=mesh, ignored_params=routers)


def _concrete_dtype(config, dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    resolved = resolve_dtype(dtype)
    if isinstance(resolved, torch.dtype):
        return resolved
    if device.type == "cpu":
        return torch.float32  # as load_model: half precision is slow on CPU
    own = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None)
    if isinstance(own, str):
        own = getattr(torch, own, None)
    return own if isinstance(own, torch.dtype) else torch.float32


def load_model_on_rank(
    path: str,
    world_size: int,
    dtype: str | torch.dtype | None = "auto",
    device: str | None = None,
    attn_implementation: str | None = None,
    device_map: str | None = None,
    trust_remote_code: bool = False,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """The whole model on this process's device: ``device`` if given, else under torchrun each process
    takes its own GPU (LOCAL_RANK)."""
    check_device_map(device_map)
    if device is None and world_size > 1:
        device = str(local_device())
    return load_model(
        path,
        dtype=dtype,
        device=device,
        attn_implementation=attn_implementation,
        device_map=device_map,
        trust_remote_code=trust_remote_code,
    )


def load_sharded_model(
    name_or_path: str,
    dtype: str | torch.dtype | None = "auto",
    attn_implementation: str | None = None,
    trust_remote_code: bool = False,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """The model sharded over the joined group: built on meta, sharded, filled from rank 0's host copy."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict
    from torch.distributed.device_mesh import init_device_mesh

    rank, size = world()
    device = local_device()
    check_no_remote_code(name_or_path, trust_remote_code)
    try:
        config = AutoConfig.from_pretrained(str(name_or_path), trust_remote_code=trust_remote_code)
    except Exception as exc:  # noqa: BLE001 - whatever transformers raises: one sentence naming the folder
        raise ModelError(
            f"{name_or_path}: cannot read the model's config ({str(exc).splitlines()[0][:200]})"
        ) from None
    torch_dtype = _concrete_dtype(config, dtype, device)
    extra = {"attn_implementation": attn_implementation} if attn_implementation else {}
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(
            config, dtype=torch_dtype, trust_remote_code=trust_remote_code, **extra
        )
    info = discover_routers(model)
    mesh = init_device_mesh(device.type, (size,))
    shard_model(model, info, mesh)
    model.to_empty(device=device)
    source = None
    if rank == 0:
        source, _ = load_model(
            name_or_path,
            dtype=torch_dtype,
            device="cpu",
            attn_implementation=attn_implementation,
            trust_remote_code=trust_remote_code,
        )
    full = source.state_dict() if source is not None else {}
    set_model_state_dict(
        model, full, options=StateDictOptions(full_state_dict=True, broadcast_from_rank0=True)
    )
    # Buffers that are not in the state dict (rotary frequencies) were left uninitialised by to_empty.
    own_buffers = dict(source.named_buffers()) if source is not None else {}
    with torch.no_grad():
        for name, buf in model.named_buffers():
            if rank == 0:
                buf.copy_(own_buffers[name].to(buf.device, buf.dtype))
            dist.broadcast(buf, src=0)
    del source, full, own_buffers
    model.eval()
    model.requires_grad_(False)
    return model, load_tokenizer(name_or_path, trust_remote_code)


def resident_parameter_bytes(model: nn.Module) -> int:
    """Bytes of parameters this rank holds: a sharded parameter counts its local shard only."""
    total = 0
    for p in model.parameters():
        local = p.to_local() if hasattr(p, "to_local") else p
        total += local.numel() * local.element_size()
    return total


def full_parameter_bytes(model: nn.Module) -> int:
    """Bytes of the whole model's parameters (the global shapes of sharded ones)."""
    return sum(p.numel() * p.element_size() for p in model.parameters())
