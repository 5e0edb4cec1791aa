"""Shift router logits at one token per row, for any family, through the router's own code.

Oracle routing and C3PO move a sample's last-token routing weights and need the model to compute
with them. Rather than re-implement each family's top-k rule, a forward pre-hook changes the
router's *input* at that token by ``delta_x = delta_logits @ pinv(W).T``; for a linear router
``logits = x W^T (+ b)`` this yields exactly ``logits + delta_logits`` (W has full row rank whenever
hidden size >= number of experts, true of every MoE LLM), and the family's own softmax/sigmoid,
top-k and normalisation then run unchanged. The experts still see the original hidden state.
"""

from __future__ import annotations

import torch
from torch import nn

from moe_roma.io.errors import ModelError
from moe_roma.models.discovery import MoEInfo


def logit_linear(router: nn.Module, num_experts: int) -> nn.Module:
    """The linear map whose output is the router's logits: the router itself (OLMoE, Qwen, DeepSeek...)
    or its one linear child (DBRX, JetMoE, HunYuan wrap an ``nn.Linear``)."""
    weight = getattr(router, "weight", None)
    if isinstance(weight, torch.Tensor) and weight.dim() == 2 and weight.shape[0] == num_experts:
        return router
    children = [m for m in router.children() if isinstance(m, nn.Linear) and m.out_features == num_experts]
    if len(children) == 1:
        return children[0]
    raise ModelError(
        f"{type(router).__name__}: oracle routing and C3PO need a linear map from the hidden state to the "
        f"{num_experts} expert logits, and this router has none"
    )


def logits_to_input_map(linear: nn.Module) -> torch.Tensor:
    """(E, H) matrix M with ``(delta @ M) @ W.T == delta``: the right pseudo-inverse of W, transposed."""
    w = linear.weight.detach().double()
    return torch.linalg.solve(w @ w.T, w).to(linear.weight.dtype)


class RoutingOverride:
    """Within the block, add ``offsets[layer][r]`` to the logits of row r at ``positions[r]``.

    ``offsets`` may require grad: the model's output is then differentiable in them.

    >>> with RoutingOverride(info, {3: delta}, rows, positions, batch_shape):  # doctest: +SKIP
    ...     out = model(**batch)
    """

    def __init__(
        self,
        info: MoEInfo,
        offsets: dict[int, torch.Tensor],
        positions: torch.Tensor,
        batch_shape: tuple[int, int] | torch.Size,
    ) -> None:
        self.info = info
        self.offsets = offsets
        self.positions = positions
        self.batch_shape = (int(batch_shape[0]), int(batch_shape[1]))
        self._linears = {
            layer: logit_linear(info.routers[layer].module, info.routers[layer].num_experts)
            for layer in offsets
        }
        self._maps = {layer: logits_to_input_map(linear) for layer, linear in self._linears.items()}
        self._handles: list = []
        self._reached: set[int] = set()

    def logit_offsets(self, layer: int, module: nn.Module, tokens: torch.Tensor) -> torch.Tensor:
        """The (R, E) logit offsets for the selected tokens' router inputs ``tokens`` (R, H)."""
        return self.offsets[layer]

    def _hook(self, layer: int):
        def pre(module, args):
            self._reached.add(layer)
            x = args[0]
            b, t = self.batch_shape
            flat = x.reshape(b * t, x.shape[-1])
            index = torch.arange(b, device=x.device) * t + self.positions.to(x.device)
            offsets = self.logit_offsets(layer, module, flat[index])
            delta = (offsets.to(self._maps[layer].dtype) @ self._maps[layer]).to(x.dtype)
            shifted = flat.index_add(0, index, delta)  # out of place: the experts keep the original x
            return (shifted.reshape(x.shape), *args[1:])

        return pre

    def __enter__(self) -> RoutingOverride:
        for layer in self.offsets:
            self._handles.append(self._linears[layer].register_forward_pre_hook(self._hook(layer)))
        return self

    def __exit__(self, exc_type, *exc) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()
        missed = sorted(set(self.offsets) - self._reached)
        self._reached.clear()
        if exc_type is None and missed:
            # A router that applies its weight by hand (F.linear) never calls the module we hook:
            # the offsets would silently not be applied.
            router = self.info.routers[missed[0]].module
            raise ModelError(
                f"{type(router).__name__} applies its weight without calling it as a module, so oracle "
                f"routing and C3PO cannot shift its logits (layers {missed})"
            )


def target_logit_offsets(
    current_logits: torch.Tensor, target: torch.Tensor, gate_function: str
) -> torch.Tensor:
    """Logit offsets that turn the routing of ``current_logits`` into the distribution ``target`` (..., E).

    Softmax routers: ``log target - log softmax(current)`` (a constant shift would not matter).
    Sigmoid routers normalise their scores, so any total mass gives the same routing: the target
    keeps the current mass where every score stays below 1, ``s' = target * mass``, and the offset
    is ``logit(s') - current``.
    """
    eps = 1e-6
    current_logits = current_logits.double()
    target = target.double()
    if gate_function == "softmax":
        return target.clamp_min(eps).log() - torch.log_softmax(current_logits, dim=-1)
    scores = torch.sigmoid(current_logits)
    # Normalisation makes the scale free: keep the current mass unless a score would have to pass 1.
    mass = torch.minimum(scores.sum(-1, keepdim=True), 0.98 / target.max(-1, keepdim=True).values)
    wanted = (target * mass).clamp(eps, 1 - eps)
    return torch.logit(wanted) - current_logits


class RoutingTargets(RoutingOverride):
    """Within the block, row r's routing at ``positions[r]`` in each layer becomes ``targets[layer][r]``.

    ``targets[layer]`` (R, E) are distributions over all experts (may require grad). Unlike fixed
    offsets, each offset is computed inside the forward from the router's logits at that moment, so
    later layers hit their target although earlier layers changed their input.
    """

    def __init__(
        self,
        info: MoEInfo,
        targets: dict[int, torch.Tensor],
        positions: torch.Tensor,
        batch_shape: tuple[int, int] | torch.Size,
    ) -> None:
        super().__init__(info, targets, positions, batch_shape)

    def logit_offsets(self, layer: int, module: nn.Module, tokens: torch.Tensor) -> torch.Tensor:
        router = self.info.routers[layer]
        out = module.forward(tokens)  # the router's own code (``forward`` skips hooks: no recursion)
        logits = out[router.logits_index] if isinstance(out, (tuple, list)) else out
        return target_logit_offsets(logits, self.offsets[layer].to(tokens.device), router.gate_function)
