"""Router discovery and routing capture on tiny random models of every supported family."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from helpers.tiny_models import FAMILIES, REFUSED, build_tiny_model
from moe_roma.io.errors import ModelError
from moe_roma.models.discovery import _declared_recorders, discover_routers, routing_weights
from moe_roma.models.hooks.capture import RoutingCapture, last_token_positions

# Families that mix dense and MoE layers list their MoE layers here (the tiny configs make layer 0 dense;
# nemotron_h alternates Mamba/attention blocks with MoE blocks).
_FIRST_DENSE = [
    "afmoe",
    "axk1",
    "axk2",
    "bailing_hybrid",
    "beam",
    "deepseek_v2",
    "deepseek_v3",
    "deepseek_v32",
    "dots1",
    "dots3_note_text",
    "ergo",
    "ernie4_5_moe",
    "exaone_moe",
    "flint",
    "glm4_moe",
    "glm4_moe_lite",
    "glm_moe_dsa",
    "hy_v3",
    "hy_v4",
    "kimi_linear",
    "kolibri1_1",
    "laguna",
    "lfm2_moe",
    "mimo_v2_flash",
    "minicpm5_moe",
    "mistral4",
    "param2moe",
    "qwen2_moe",
    "sarvam_mla",
    "sarvam_moe",
]
EXPECTED_MOE_LAYERS = {**{f: [1, 2, 3] for f in _FIRST_DENSE}, "nemotron_h": [1, 3]}
# Routers that score each expert with its own sigmoid (RoMA normalises the scores over all experts), as
# read in each family's modeling code; all others use a softmax.
_SIGMOID = [
    "afmoe",
    "axk1",
    "axk2",
    "bailing_hybrid",
    "beam",
    "deepseek_v3",
    "deepseek_v32",
    "dots1",
    "dots3_note_text",
    "ergo",
    "exaone_moe",
    "flint",
    "glm4_moe",
    "glm4_moe_lite",
    "glm_moe_dsa",
    "hy_v3",
    "hy_v4",
    "inkling_text",
    "inkling2_text",
    "inkling2_loop_text",
    "kimi_linear",
    "kolibri1",
    "kolibri1_1",
    "laguna",
    "lfm2_moe",
    "llama4_text",
    "mimo_v2_flash",
    "minicpm5_moe",
    "minimax_m2",
    "minimax_m3_vl_text",
    "nemotron_h",
    "param2moe",
    "sarvam_mla",
    "sarvam_moe",
    "solar_open",
]
EXPECTED_GATE_FUNCTION = dict.fromkeys(_SIGMOID, "sigmoid")
# Gemma 4 records its router's softmax probabilities as ``router_logits``, not logits.
RECORDS_PROBABILITIES = {"gemma4_text"}


def _recorded_by_router(model, ids, router_names: set[str]) -> list[torch.Tensor]:
    """transformers' own ``router_logits`` records that came from the routers RoMA found, in layer order.

    A family may record more than its token routers (JetMoE records its attention's mixture-of-heads
    gating too, a different number of times per layer across releases). Which module produced each
    record is read from the family's own ``_can_record_outputs`` declaration: every module it
    declares is watched, in call order, and only the records of the discovered routers are kept.
    """
    recorders = _declared_recorders(model)
    calls: list[str] = []
    handles = [
        module.register_forward_hook(lambda m, a, o, name=name: calls.append(name))
        for name, module in model.named_modules()
        if any(r.matches(name, module) for r in recorders)
    ]
    try:
        with torch.no_grad():
            output = model(ids, output_router_logits=True)
    finally:
        for handle in handles:
            handle.remove()
    recorded = [r for r in output.router_logits if r is not None]
    assert len(recorded) == len(calls), "one record per call of a declared module"
    # A router read through a child (Gemma 4's ``router.proj``) is recorded at its parent.
    ours = [any(n == name or n.startswith(f"{name}.") for n in router_names) for name in calls]
    return [r for r, keep in zip(recorded, ours) if keep]


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def family_model(request):
    return request.param, build_tiny_model(request.param)


def test_discovers_moe_layers_experts_topk_and_rule(family_model):
    family, model = family_model
    info = discover_routers(model)
    assert info.family == family
    assert info.moe_layers == EXPECTED_MOE_LAYERS.get(family, [0, 1, 2, 3])
    assert info.num_layers == 4
    assert info.num_experts == 8
    assert {r.top_k for r in info.routers.values()} == {2}
    assert info.gate_function == EXPECTED_GATE_FUNCTION.get(family, "softmax")
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
    names = {info.routers[layer].name for layer in info.moe_layers}
    reference = [r.reshape(3, 9, -1) for r in _recorded_by_router(model, ids, names)]
    assert len(reference) == len(info.moe_layers)
    for ref, layer in zip(reference, info.moe_layers):
        expected = (
            ref.float() if family in RECORDS_PROBABILITIES else routing_weights(ref, info.gate_function)
        )
        torch.testing.assert_close(captured[layer], expected, rtol=0, atol=1e-6)
        torch.testing.assert_close(captured[layer].sum(-1), torch.ones(3, 9), rtol=0, atol=1e-5)


def _router_choice(output, num_experts: int, top_k: int) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(weights, experts), each (tokens, top_k), as the router returned them; None if it returns logits."""
    if not isinstance(output, (tuple, list)):
        return None
    tensors = [t for t in output if isinstance(t, torch.Tensor)]
    picks = [t for t in tensors if not t.is_floating_point() and t.dim() == 2 and t.shape[1] == top_k]
    gates = [t for t in tensors if t.is_floating_point() and t.dim() == 2 and t.shape[1] == top_k]
    if picks and gates:  # (logits, top-k weights, top-k experts[, ...]): most families
        return gates[0], picks[0]
    if len(output) > 3 and isinstance(output[3], (list, tuple)):
        # JetMoE: the token slots (token * top_k + j) sorted by expert, their gates, and per-expert counts
        slot_order, _, slot_gates, counts = output[:4]
        experts = torch.repeat_interleave(torch.arange(num_experts), torch.tensor(counts))
        picked = torch.empty_like(slot_order).index_copy_(0, slot_order, experts)
        weights = torch.empty_like(slot_gates).index_copy_(0, slot_order, slot_gates)
        return weights.view(-1, top_k), picked.view(-1, top_k)
    scores = output[0]  # Llama 4: (scores over all experts, zero where not picked, logits)
    assert len(output) == 2 and scores.shape[-1] == num_experts, "unknown router output layout"
    picked = (scores > 0).nonzero()[:, 1].view(-1, top_k)
    return scores.gather(1, picked), picked


def test_routing_weights_agree_with_the_routers_own_expert_choice(family_model):
    """Top-k of our full distribution = the experts the router picked; renormalised top-k = its weights
    up to a per-token scale (routed_scaling_factor, unnormalised top-k, a shared expert's share)."""
    family, model = family_model
    info = discover_routers(model)
    modules = dict(model.named_modules())
    picked: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def keep_router(layer):
        def hook(module, args, output):
            choice = _router_choice(output, info.num_experts, info.routers[layer].top_k)
            if choice is not None:
                picked[layer] = (choice[0].detach(), choice[1].detach())

        return hook

    def keep_experts_input(layer):
        def hook(module, args):  # experts(hidden, top_k_index, top_k_weights)
            if layer not in picked:
                picked[layer] = (args[2].detach(), args[1].detach())

        return hook

    handles = []
    for layer, r in info.routers.items():
        handles.append(r.module.register_forward_hook(keep_router(layer)))
        # Routers that return logits only (DBRX; Gemma 4's logits layer) leave the choice to the block
        # around them, which hands it to its experts: read it there.
        holder = r.name
        while holder and not hasattr(modules[holder], "experts"):
            holder = holder.rpartition(".")[0]
        if holder:
            handles.append(modules[holder].experts.register_forward_pre_hook(keep_experts_input(layer)))
    ids = torch.randint(3, 96, (2, 7), generator=torch.Generator().manual_seed(2))
    try:
        with torch.no_grad(), RoutingCapture(info) as cap:
            model(ids)
            weights = cap.weights(ids.shape)
    finally:
        for h in handles:
            h.remove()
    assert sorted(picked) == info.moe_layers
    for layer, (router_w, router_idx) in picked.items():
        ours = weights[layer].reshape(-1, info.num_experts)
        top_w, top_idx = ours.topk(info.routers[layer].top_k, dim=-1)
        assert router_idx.shape == top_idx.shape
        assert torch.equal(router_idx.sort(-1).values, top_idx.sort(-1).values)
        if family == "phimoe":  # sparsemixer weighs each pick by a softmax over logits near it, not our top-k
            continue
        order_ours, order_router = top_idx.argsort(-1), router_idx.argsort(-1)
        ours_sorted = (top_w / top_w.sum(-1, keepdim=True)).gather(1, order_ours)
        theirs = router_w.float().gather(1, order_router)
        torch.testing.assert_close(ours_sorted, theirs / theirs.sum(-1, keepdim=True), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("family", sorted(REFUSED))
def test_families_whose_routing_roma_cannot_represent_are_refused_with_the_reason(family):
    with pytest.raises(ModelError, match="not supported|RoMA supports softmax and sigmoid"):
        discover_routers(build_tiny_model(family))


def test_gate_function_follows_the_config_field_the_router_reads():
    """Cohere2-MoE picks softmax or sigmoid from ``config.expert_selection_fn``."""
    assert discover_routers(build_tiny_model("cohere2_moe")).gate_function == "softmax"
    assert (
        discover_routers(build_tiny_model("cohere2_moe", expert_selection_fn="sigmoid")).gate_function
        == "sigmoid"
    )


def test_dense_model_is_refused_with_one_clear_sentence():
    cfg = LlamaConfig(
        vocab_size=32,
        hidden_size=16,
        intermediate_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
    )
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


def _declares_router_logits(model_class: type) -> bool:
    """Whether a causal LM class, or any model class of its module, declares ``router_logits`` recording."""
    import importlib

    module = importlib.import_module(model_class.__module__)
    classes = [c for c in vars(module).values() if isinstance(c, type)]
    return any("router_logits" in (getattr(c, "_can_record_outputs", None) or {}) for c in classes)


def test_every_moe_family_of_the_installed_transformers_is_tested_or_refused():
    """A transformers release that adds an MoE family fails here, by name, until the family is in
    ``tests/helpers/tiny_models.py`` (tested) or ``REFUSED`` (refused with a reason). Multimodal wrappers
    count as covered through their text model."""
    import transformers
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    known = set(FAMILIES) | set(REFUSED)
    missing = []
    for model_type, class_name in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.items():
        model_class = getattr(transformers, class_name, None)
        if model_class is None or not _declares_router_logits(model_class):
            continue
        sub = getattr(transformers.CONFIG_MAPPING[model_type], "sub_configs", {}) or {}
        text_type = getattr(sub.get("text_config"), "model_type", None)
        if model_type not in known and text_type not in known:
            missing.append(model_type)
    assert not missing, (
        f"transformers {transformers.__version__} has MoE families with no tiny model in "
        f"tests/helpers/tiny_models.py: {', '.join(sorted(missing))}"
    )
