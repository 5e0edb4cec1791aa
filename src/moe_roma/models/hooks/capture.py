"""Capture router logits in a forward pass with forward hooks.

The hooks only read the router's output, so the model computes exactly what it would without
them. Logits keep their autograd graph: when the routers are being trained, routing weights
derived from the captured logits are ``r_i(theta)``, live functions of the router parameters.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from moe_roma.models.discovery import MoEInfo, routing_weights


class RoutingCapture:
    """Context manager recording the router logits of chosen layers during forward passes.

    >>> with RoutingCapture(info, layers=[3, 4]) as cap:  # doctest: +SKIP
    ...     model(input_ids)
    ...     w = cap.weights(batch_shape=input_ids.shape)  # {layer: (B, T, E)}
    """

    def __init__(self, info: MoEInfo, layers: Iterable[int] | None = None) -> None:
        self.info = info
        self.layers = list(layers) if layers is not None else info.moe_layers
        self.logits: dict[int, torch.Tensor] = {}
        self._handles: list[torch.utils.hooks.RemovableHandle] = []

    def _hook(self, layer: int, index: int):
        def hook(module: nn.Module, args, output) -> None:
            logits = output[index] if isinstance(output, (tuple, list)) else output
            self.logits[layer] = logits

        return hook

    def __enter__(self) -> RoutingCapture:
        for layer in self.layers:
            router = self.info.routers[layer]
            self._handles.append(router.module.register_forward_hook(self._hook(layer, router.logits_index)))
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def clear(self) -> None:
        self.logits.clear()

    def layer_logits(self, layer: int, batch_shape: tuple[int, int] | torch.Size) -> torch.Tensor:
        """Router logits of one layer as (B, T, E); routers see tokens flattened to (B*T, H)."""
        if layer not in self.logits:
            raise RuntimeError(f"no router logits captured for layer {layer}; was a forward pass run?")
        b, t = int(batch_shape[0]), int(batch_shape[1])
        return self.logits[layer].reshape(b, t, -1)

    def weights(self, batch_shape: tuple[int, int] | torch.Size) -> dict[int, torch.Tensor]:
        """Routing weights (full distribution over experts, float32) per layer, shape (B, T, E)."""
        return {
            layer: routing_weights(
                self.layer_logits(layer, batch_shape), self.info.routers[layer].gate_function
            )
            for layer in self.layers
        }

    def weights_at(self, batch_shape: tuple[int, int] | torch.Size, positions: torch.Tensor) -> torch.Tensor:
        """Routing weights at one position per row, stacked over layers: (B, L, E)."""
        rows = torch.arange(int(batch_shape[0]), device=positions.device)
        return self.weights_at_rows(batch_shape, rows, positions)

    def weights_at_rows(
        self, batch_shape: tuple[int, int] | torch.Size, rows: torch.Tensor, positions: torch.Tensor
    ) -> torch.Tensor:
        """Routing weights at (row, position) pairs, stacked over layers: (N, L, E).

        Only the selected tokens' logits are turned into weights, and their graph is kept.
        """
        per_layer = [
            routing_weights(
                self.layer_logits(layer, batch_shape)[rows, positions], self.info.routers[layer].gate_function
            )
            for layer in self.layers
        ]
        return torch.stack(per_layer, dim=1)


def last_token_positions(attention_mask: torch.Tensor) -> torch.Tensor:
    """Index of the last real token of each row, for left or right padding.

    >>> last_token_positions(torch.tensor([[0, 1, 1], [1, 1, 0]]))
    tensor([2, 1])
    """
    t = attention_mask.shape[1]
    idx = torch.arange(t, device=attention_mask.device).expand_as(attention_mask)
    return torch.where(attention_mask.bool(), idx, torch.full_like(idx, -1)).max(dim=1).values
