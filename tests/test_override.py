"""Routing override: shifting a router's logits at one token through the router's own code."""

from __future__ import annotations

import pytest
import torch

from helpers.tiny_models import FAMILIES, build_tiny_model
from moe_roma.io.errors import ModelError
from moe_roma.models.discovery import discover_routers, routing_weights
from moe_roma.models.hooks.capture import RoutingCapture
from moe_roma.models.hooks.override import RoutingOverride, target_logit_offsets

# Routers whose logits no hook on a linear module can shift, refused with one clear error.
CANNOT_OVERRIDE = {
    "inkling_text": "has none",  # one weight row more than experts (its shared expert's share)
    "longcat_flash": "without calling it as a module",  # F.linear(x, self.classifier.weight)
}


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_override_reaches_exactly_the_target_routing_at_the_chosen_token_only(family):
    model = build_tiny_model(family)
    info = discover_routers(model)
    if family in CANNOT_OVERRIDE:
        ids = torch.randint(3, 96, (1, 4))
        zero = {info.moe_layers[-1]: torch.zeros(1, info.num_experts)}
        # Each context is entered before the next is built, so a refusal in the constructor is caught too.
        with (
            pytest.raises(ModelError, match=CANNOT_OVERRIDE[family]),
            torch.no_grad(),
            RoutingOverride(info, zero, torch.tensor([3]), ids.shape),
        ):
            model(ids)
        return
    layers = info.moe_layers[-2:]
    ids = torch.randint(3, 96, (2, 6), generator=torch.Generator().manual_seed(0))
    positions = torch.tensor([5, 3])
    with torch.no_grad(), RoutingCapture(info, layers) as cap:
        base_out = model(ids).logits
        base_logits = {layer: cap.layer_logits(layer, ids.shape).clone() for layer in layers}
    rows = torch.arange(2)
    target = torch.softmax(
        torch.randn(2, info.num_experts, generator=torch.Generator().manual_seed(1)) * 2, -1
    )
    # Override only the first tuned layer so the second layer's input is unchanged at other tokens.
    layer = layers[0]
    offsets = {
        layer: target_logit_offsets(base_logits[layer][rows, positions], target, info.gate_function).float()
    }
    with (
        torch.no_grad(),
        RoutingOverride(info, offsets, positions, ids.shape),
        RoutingCapture(info, layers) as cap,
    ):
        out = model(ids).logits
        new = routing_weights(cap.layer_logits(layer, ids.shape), info.gate_function)
    torch.testing.assert_close(new[rows, positions], target, rtol=1e-3, atol=1e-4)
    # Other tokens in that layer route as before, and earlier positions' outputs are untouched (causal).
    before = routing_weights(base_logits[layer], info.gate_function)
    mask = torch.ones(2, 6, dtype=torch.bool)
    mask[rows, positions] = False
    torch.testing.assert_close(new[mask], before[mask], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(out[0, :5], base_out[0, :5], rtol=1e-4, atol=1e-5)
    assert not torch.allclose(out[0, 5], base_out[0, 5])


def test_model_output_is_differentiable_in_the_offsets():
    model = build_tiny_model("olmoe")
    info = discover_routers(model)
    ids = torch.randint(3, 96, (1, 5))
    delta = torch.zeros(1, info.num_experts, requires_grad=True)
    with RoutingOverride(info, {3: delta}, torch.tensor([4]), ids.shape):
        out = model(ids).logits[0, -1].log_softmax(-1)[7]
    out.backward()
    assert delta.grad is not None and delta.grad.abs().sum() > 0
