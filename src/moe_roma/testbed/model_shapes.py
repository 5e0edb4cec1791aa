"""The pre-training study's architectures as transformers families, at the testbed's active parameter count.

Every architecture keeps the build config's hidden size, layers and heads, and the same *active*
FFN width per token: ``top_k x intermediate_size`` of the config (128 for ``downstream``, 192 for
``in-domain``). Only how that width is split into experts and routed changes:

``olmoe``      the config's own OLMoE shape (the committed testbed models)
``dense``      ``LlamaForCausalLM`` with one FFN of the active width (no routers)
``switch``     OLMoE, top-1 over 8 experts of the active width (``switch-16``, ``switch-32``: 16, 32)
``topk``       OLMoE, top-2 over 8 experts of half the width
``fine``       OLMoE, top-4 over 32 experts of a quarter of the width (the downstream testbed's shape)
``nested``     DeepSeek-V3, top-4 over 32 experts in 4 groups, experts chosen inside the best 2 groups
               (group-limited routing: ``n_group``, ``topk_group``), no shared expert

Each is a plain transformers config, so the saved folder loads with ``AutoModelForCausalLM``.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Shape:
    family: str  # "olmoe", "llama" or "deepseek_v3"
    num_experts: int  # 0 for dense
    top_k: int
    n_group: int = 1
    topk_group: int = 1


def shape_of(cfg) -> Shape:
    """The routing shape of ``cfg.arch`` (``cfg`` is a build config)."""
    presets = {
        "dense": Shape("llama", 0, 0),
        "switch": Shape("olmoe", 8, 1),
        "switch-16": Shape("olmoe", 16, 1),
        "switch-32": Shape("olmoe", 32, 1),
        "topk": Shape("olmoe", 8, 2),
        "fine": Shape("olmoe", 32, 4),
        "nested": Shape("deepseek_v3", 32, 4, n_group=4, topk_group=2),
    }
    if cfg.arch == "olmoe":
        return Shape("olmoe", cfg.num_experts, cfg.top_k)
    return presets[cfg.arch]


def active_width(cfg) -> int:
    """The FFN width one token uses, the same for every architecture of a build config."""
    return cfg.top_k * cfg.intermediate_size


def model_config(cfg, tokenizer):
    """The transformers config of ``cfg.arch`` for a build config and its tokenizer."""
    shape = shape_of(cfg)
    width = active_width(cfg)
    common = dict(
        vocab_size=len(tokenizer),
        hidden_size=cfg.hidden_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        num_key_value_heads=cfg.num_heads,
        max_position_embeddings=256,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=True,  # halves the embedding bytes of a model this small
    )
    if shape.family == "llama":
        from transformers import LlamaConfig

        return LlamaConfig(intermediate_size=width, **common)
    if shape.family == "deepseek_v3":
        from transformers import DeepseekV3Config

        head = cfg.hidden_size // cfg.num_heads
        return DeepseekV3Config(
            n_routed_experts=shape.num_experts,
            num_experts_per_tok=shape.top_k,
            n_group=shape.n_group,
            topk_group=shape.topk_group,
            moe_intermediate_size=width // shape.top_k,
            intermediate_size=width,
            n_shared_experts=0,
            first_k_dense_replace=0,
            norm_topk_prob=False,
            routed_scaling_factor=1.0,
            # Multi-head latent attention kept near the others' attention size (no query compression).
            q_lora_rank=None,
            kv_lora_rank=head,
            qk_rope_head_dim=head // 2,
            qk_nope_head_dim=head // 2,
            v_head_dim=head,
            output_router_logits=False,
            **common,
        )
    from transformers import OlmoeConfig

    expert = cfg.intermediate_size if cfg.arch == "olmoe" else width // shape.top_k
    return OlmoeConfig(
        intermediate_size=expert,
        num_experts=shape.num_experts,
        num_experts_per_tok=shape.top_k,
        router_aux_loss_coef=cfg.router_aux_loss_coef,
        output_router_logits=False,
        norm_topk_prob=False,
        **common,
    )


def make_model(cfg, tokenizer):
    """A freshly initialised ``*ForCausalLM`` of ``cfg.arch``."""
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_config(model_config(cfg, tokenizer))


def parameter_counts(model, cfg) -> dict[str, int]:
    """Total parameters and those one token uses (the routed experts scaled by top_k / num_experts)."""
    shape = shape_of(cfg)
    total = sum(p.numel() for p in model.parameters())
    experts = sum(p.numel() for n, p in model.named_parameters() if ".experts." in n)
    inactive = experts * (1 - shape.top_k / shape.num_experts) if shape.num_experts else 0
    return {"total": total, "active": int(round(total - inactive))}
