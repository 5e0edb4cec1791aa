"""Router discovery and routing capture on tiny random models of every supported family."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from moe_roma.errors import ModelError
from moe_roma.models.discovery import discover_routers, routing_weights
from moe_roma.routing.capture import RoutingCapture, last_token_positions
from tiny_models import FAMILIES, build_tiny_model

# Families that mix dense and MoE layers list their MoE layers here (the tiny configs make layer 0 dense).
EXPECTED_MOE_LAYERS = {"qwen2_moe": [1, 2, 3], "deepseek_v3": [1, 2, 3]}
EXPECTED_SCORING = {"deepseek_v3": "sigmoid"}


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def family_model(request):
    return request.param, build_tiny_model(request.param)


def test_discovers_moe_layers_experts_topk_and_rule(family_model):
    family, model = family_model
    info = discover_routers(model)
    assert info.family == family
    assert info.moe_layers == EXPECTED_MOE_LAYERS.get(family, [0, 1, 2, 3])
    assert info.num_experts == 8
    assert {r.top_k for r in info.routers.values()} == {2}
    assert info.scoring == EXPECTED_SCORING.get(family, "softmax")
    for router in info.routers.values():
        names = dict(model.named_parameters())
        assert router.parameter_names and all(n in names for n in router.parameter_names)
        assert f".{router.layer}." in router.name


def test_capture_matches_the_familys_own_router_logits_and_leaves_output_unchanged(family_model):
    family, model = family_model
    info = discover_routers(model)
    ids = torch.randint(3, 96, (3, 9), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        plain = model(ids, output_router_logits=True)
        with RoutingCapture(info) as cap:
            hooked = model(ids).logits
            captured = cap.weights(ids.shape)
    assert torch.equal(plain.logits, hooked)
    # transformers records router logits for every MoE layer, in order, through the same declaration.
    reference = [r.reshape(3, 9, -1) for r in plain.router_logits if r is not None]
    assert len(reference) == len(info.moe_layers)
    for ref, layer in zip(reference, info.moe_layers):
        expected = routing_weights(ref, info.scoring)
        torch.testing.assert_close(captured[layer], expected, rtol=0, atol=1e-6)
        torch.testing.assert_close(captured[layer].sum(-1), torch.ones(3, 9), rtol=0, atol=1e-5)


def test_routing_weights_agree_with_the_routers_own_expert_choice(family_model):
    """Top-k of our full distribution = the experts the router picked; renormalised top-k = its weights."""
    family, model = family_model
    info = discover_routers(model)
    picked: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def keep(layer):
        def hook(module, args, output):
            picked[layer] = (output[1].detach(), output[2].detach())

        return hook

    handles = [r.module.register_forward_hook(keep(layer)) for layer, r in info.routers.items()]
    ids = torch.randint(3, 96, (2, 7), generator=torch.Generator().manual_seed(2))
    try:
        with torch.no_grad(), RoutingCapture(info) as cap:
            model(ids)
            weights = cap.weights(ids.shape)
    finally:
        for h in handles:
            h.remove()
    for layer, (router_w, router_idx) in picked.items():
        ours = weights[layer].reshape(-1, info.num_experts)
        top_w, top_idx = ours.topk(info.routers[layer].top_k, dim=-1)
        if family == "phimoe":  # sparsemixer picks the arg-max first, then samples the rest
            assert torch.equal(router_idx[:, 0], top_idx[:, 0])
            continue
        assert torch.equal(router_idx.sort(-1).values, top_idx.sort(-1).values)
        order_ours, order_router = top_idx.argsort(-1), router_idx.argsort(-1)
        ours_sorted = (top_w / top_w.sum(-1, keepdim=True)).gather(1, order_ours)
        theirs = router_w.float().gather(1, order_router)
        if family == "deepseek_v3":
            theirs = theirs / model.config.routed_scaling_factor
        if family in ("olmoe", "qwen2_moe") and not model.config.norm_topk_prob:
            theirs = theirs / theirs.sum(-1, keepdim=True)
        torch.testing.assert_close(ours_sorted, theirs, rtol=1e-4, atol=1e-5)


def test_dense_model_is_refused_with_one_clear_sentence():
    cfg = LlamaConfig(vocab_size=32, hidden_size=16, intermediate_size=16, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=2)  # fmt: skip
    with pytest.raises(ModelError, match="^no MoE routers found in LlamaForCausalLM$"):
        discover_routers(LlamaForCausalLM(cfg))


def test_layer_selection():
    info = discover_routers(build_tiny_model("qwen2_moe", num_layers=6))
    assert info.moe_layers == [1, 2, 3, 4, 5]
    assert info.select_layers("last2") == [4, 5]
    assert info.select_layers("first1") == [1]
    assert info.select_layers("all") == [1, 2, 3, 4, 5]
    assert info.select_layers("5,3") == [3, 5]
    for bad in ("0", "9", "lastx", "last0"):
        with pytest.raises(ModelError):
            info.select_layers(bad)


def test_last_token_positions_for_left_and_right_padding():
    mask = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 0], [1, 1, 1, 1]])
    assert last_token_positions(mask).tolist() == [3, 2, 3]
