"""Run only the tuned layers: the frozen prefix's output is computed once and replayed.

The hidden states entering the first tuned decoder layer do not depend on any router being
trained, so they are computed once per sequence and cached. At each step the decoder layers
before it are swapped for stand-ins that emit the cached states, and the model's own forward
runs the rest (its masks, position embeddings, final norm, head and logit scaling), so every
family computes exactly what its full forward would, minus the prefix's cost.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn
from tqdm.auto import tqdm
from transformers import PreTrainedModel

from moe_roma.models.discovery import MoEInfo
from moe_roma.models.inputs import left_pad


def decoder_layers(model: PreTrainedModel, info: MoEInfo) -> nn.ModuleList:
    """The ModuleList of decoder layers, found from a router's module path."""
    name = next(iter(info.routers.values())).name
    parts = name.split(".")
    for i in range(len(parts) - 1, 0, -1):
        if parts[i].isdigit():
            container = model.get_submodule(".".join(parts[:i]))
            if isinstance(container, nn.ModuleList):
                return container
    raise RuntimeError(f"cannot find the decoder layers holding {name}")


class _Replay(nn.Module):
    """Stands in for a frozen prefix layer: passes its input on, or emits the cached states."""

    def __init__(self, original: nn.Module, states: torch.Tensor | None) -> None:
        super().__init__()
        self.states = states
        # Some families read per-layer attributes (attention type, index) in their loop.
        for key, value in vars(original).items():
            if not key.startswith("_") and isinstance(value, (int, float, str, bool, type(None))):
                setattr(self, key, value)

    def forward(self, hidden_states: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        return hidden_states if self.states is None else self.states.to(hidden_states.dtype)


@contextlib.contextmanager
def replay_prefix(
    model: PreTrainedModel, info: MoEInfo, first_layer: int, states: torch.Tensor
) -> Iterator[None]:
    """Within the block, layers ``< first_layer`` are skipped; layer ``first_layer`` receives ``states``."""
    layers = decoder_layers(model, info)
    originals = [layers[i] for i in range(first_layer)]
    try:
        for i in range(first_layer):
            layers[i] = _Replay(originals[i], states if i == first_layer - 1 else None)
        yield
    finally:
        for i, layer in enumerate(originals):
            layers[i] = layer


class PrefixCache:
    """Hidden states entering ``first_layer`` for every sequence, real tokens only.

    Stored as one flat (tokens + 1, H) tensor in the model's dtype, row 0 all zeros for padding, so a
    batch is assembled with a single gather. It lives on the model's device when it fits in
    ``max_device_fraction`` of the free accelerator memory, else in pinned host memory.
    """

    def __init__(self, first_layer: int, max_device_fraction: float = 0.6) -> None:
        self.first_layer = first_layer
        self.max_device_fraction = max_device_fraction
        self.flat: torch.Tensor | None = None
        self.offsets: dict[tuple[int, int], tuple[int, int]] = {}

    def _storage_device(self, device: torch.device, nbytes: int) -> torch.device:
        if device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(device)
            if nbytes <= self.max_device_fraction * free:
                return device
        return torch.device("cpu")

    @torch.no_grad()
    def fill(
        self, model: PreTrainedModel, info: MoEInfo, items, pad_id: int, batch_size: int, progress: bool
    ) -> None:
        layers = decoder_layers(model, info)
        param = next(model.parameters())
        device, dtype = param.device, param.dtype
        seqs = [((it.index, c), s) for it in items for c, s in enumerate(it.seqs)]
        seqs.sort(key=lambda kv: -len(kv[1]))
        total = sum(len(s) for _, s in seqs)
        hidden = model.config.hidden_size
        nbytes = (total + 1) * hidden * torch.tensor([], dtype=dtype).element_size()
        where = self._storage_device(device, nbytes)
        self.flat = torch.zeros(
            total + 1,
            hidden,
            dtype=dtype,
            device=where,
            pin_memory=where.type == "cpu" and device.type == "cuda",
        )
        grabbed: dict[str, torch.Tensor] = {}

        def grab(module, args, kwargs):
            grabbed["h"] = args[0] if args else kwargs["hidden_states"]
            raise _StopForward

        # prepend: the stop comes before an FSDP2 unit would all-gather the layer it does not need.
        handle = layers[self.first_layer].register_forward_pre_hook(grab, with_kwargs=True, prepend=True)
        sharded = _fsdp_root(model)
        cursor = 1
        try:
            for b in tqdm(range(0, len(seqs), batch_size), desc="prefix cache", disable=not progress):
                chunk = seqs[b : b + batch_size]
                batch = left_pad([s for _, s in chunk], pad_id).to(device)
                with contextlib.suppress(_StopForward):
                    model(**batch.model_kwargs(), use_cache=False)
                if sharded:
                    model.reset_iter_state()  # FSDP2's own recovery after a forward stopped part-way
                h = grabbed.pop("h").detach()
                t = h.shape[1]
                for row, (key, s) in enumerate(chunk):
                    n = len(s)
                    self.flat[cursor : cursor + n].copy_(h[row, t - n :].to(dtype), non_blocking=True)
                    self.offsets[key] = (cursor, n)
                    cursor += n
        finally:
            handle.remove()

    def batch_states(self, keys: list[tuple[int, int]], width: int, device) -> torch.Tensor:
        """Left-padded (B, width, H) states for the given sequences; padding rows are zeros."""
        index = torch.zeros(len(keys), width, dtype=torch.long)
        for row, key in enumerate(keys):
            start, n = self.offsets[key]
            index[row, width - n :] = torch.arange(start, start + n)
        index = index.to(self.flat.device, non_blocking=True)
        return self.flat[index].to(device, non_blocking=True)


def _fsdp_root(model: nn.Module) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


class _StopForward(Exception):
    """Raised by the caching hook: nothing after the first tuned layer is needed to fill the cache."""
