"""Tiny random MoE models of every supported family, built in-process (no downloads)."""

from __future__ import annotations

import pytest
import torch
import transformers

COMMON = dict(
    vocab_size=96,
    hidden_size=32,
    intermediate_size=32,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=128,
    tie_word_embeddings=False,
    bos_token_id=1,
    eos_token_id=2,
    pad_token_id=0,
)

# Multi-head latent attention (DeepSeek-style) wants as many key/value heads as query heads.
MLA = dict(
    kv_lora_rank=16,
    q_lora_rank=16,
    qk_rope_head_dim=8,
    qk_nope_head_dim=8,
    v_head_dim=8,
    head_dim=8,
    num_key_value_heads=4,
)
# DeepSeek-V3-style routers: one expert group, so selection is a plain top-k.
GROUPED = dict(n_group=1, topk_group=1)
SMALL_MOE = dict(num_experts_per_tok=2, moe_intermediate_size=16)
# Families that reuse GLM-4-MoE's model classes (sarvam_moe, param2moe).
GLM4_MOE_SHAPE = dict(
    n_routed_experts=8, **SMALL_MOE, n_shared_experts=1, first_k_dense_replace=1, head_dim=8, **GROUPED
)
# Sparse-attention indexers (DeepSeek-V3.2 style), linear attention and sliding-window heads, all tiny.
INDEXER = dict(index_topk=8, index_head_dim=8, index_n_heads=2)
LINEAR_ATTN = dict(linear_head_dim=8, linear_num_heads=4)
GATED_DELTA = dict(
    linear_key_head_dim=8, linear_value_head_dim=8, linear_num_key_heads=2, linear_num_value_heads=4
)
SWA_HEADS = dict(swa_num_attention_heads=4, swa_num_key_value_heads=2, swa_head_dim=8, sliding_window_size=16)

# family (the config's model_type) -> (config class, model class, extra config kwargs)
FAMILIES: dict[str, tuple[str, str, dict]] = {
    "olmoe": ("OlmoeConfig", "OlmoeForCausalLM", dict(num_experts=8, num_experts_per_tok=2)),
    "qwen2_moe": (
        "Qwen2MoeConfig",
        "Qwen2MoeForCausalLM",
        dict(
            num_experts=8,
            num_experts_per_tok=2,
            moe_intermediate_size=16,
            shared_expert_intermediate_size=16,
            mlp_only_layers=[0],
        ),
    ),
    "qwen3_moe": (
        "Qwen3MoeConfig",
        "Qwen3MoeForCausalLM",
        dict(num_experts=8, num_experts_per_tok=2, moe_intermediate_size=16, head_dim=8, norm_topk_prob=True),
    ),
    "mixtral": ("MixtralConfig", "MixtralForCausalLM", dict(num_local_experts=8, num_experts_per_tok=2)),
    "deepseek_v3": (
        "DeepseekV3Config",
        "DeepseekV3ForCausalLM",
        dict(
            n_routed_experts=8,
            num_experts_per_tok=2,
            moe_intermediate_size=16,
            n_shared_experts=1,
            first_k_dense_replace=1,
            n_group=1,
            topk_group=1,
            kv_lora_rank=16,
            q_lora_rank=16,
            qk_rope_head_dim=8,
            qk_nope_head_dim=8,
            v_head_dim=8,
            head_dim=8,
            num_key_value_heads=4,
            rope_scaling=None,
        ),
    ),
    "gpt_oss": (
        "GptOssConfig",
        "GptOssForCausalLM",
        dict(num_local_experts=8, num_experts_per_tok=2, head_dim=8, sliding_window=16, layer_types=None),
    ),
    "granitemoe": (
        "GraniteMoeConfig",
        "GraniteMoeForCausalLM",
        dict(num_local_experts=8, num_experts_per_tok=2),
    ),
    "phimoe": ("PhimoeConfig", "PhimoeForCausalLM", dict(num_local_experts=8, num_experts_per_tok=2)),
    # Every other MoE causal LM in transformers 5.24, so that "works on every MoE family" is tested.
    "afmoe": (
        "AfmoeConfig",
        "AfmoeForCausalLM",
        dict(
            num_experts=8,
            **SMALL_MOE,
            num_dense_layers=1,
            num_shared_experts=1,
            head_dim=8,
            sliding_window=16,
        ),
    ),
    "aria_text": (
        "AriaTextConfig",
        "AriaTextForCausalLM",
        dict(moe_num_experts=8, moe_topk=2, moe_num_shared_experts=1, head_dim=8),
    ),
    "axk1": (
        "AXK1Config",
        "AXK1ForCausalLM",
        dict(n_routed_experts=8, **SMALL_MOE, n_shared_experts=1, **MLA, **GROUPED),
    ),
    "axk2": (
        "AXK2Config",
        "AXK2ForCausalLM",
        dict(n_routed_experts=8, **SMALL_MOE, n_shared_experts=1, **MLA, **INDEXER, gated_norm_rank=4),
    ),
    "bailing_hybrid": (
        "BailingHybridConfig",
        "BailingHybridForCausalLM",
        dict(
            num_experts=8,
            num_experts_per_token=2,
            moe_intermediate_size=16,
            num_shared_experts=1,
            num_expert_group=1,
            topk_group=1,
            first_k_dense_replace=1,
            **MLA,
            **LINEAR_ATTN,
            layer_group_size=2,
        ),
    ),
    "beam": (
        "BeamConfig",
        "BeamForCausalLM",
        dict(num_experts=8, **SMALL_MOE, head_dim=8, sliding_window=16, **GROUPED),
    ),
    "cohere2_moe": (
        "Cohere2MoeConfig",
        "Cohere2MoeForCausalLM",
        dict(num_experts=8, num_experts_per_tok=2, head_dim=8, sliding_window=16),
    ),
    "dbrx": (
        "DbrxConfig",
        "DbrxForCausalLM",
        dict(
            d_model=32,
            n_heads=4,
            max_seq_len=128,
            attn_config=dict(kv_n_heads=2, clip_qkv=8.0),
            ffn_config=dict(moe_num_experts=8, moe_top_k=2, ffn_hidden_size=16),
        ),
    ),
    "deepseek_v2": (
        "DeepseekV2Config",
        "DeepseekV2ForCausalLM",
        dict(n_routed_experts=8, **SMALL_MOE, n_shared_experts=1, first_k_dense_replace=1, **MLA),
    ),
    "deepseek_v32": (
        "DeepseekV32Config",
        "DeepseekV32ForCausalLM",
        dict(
            n_routed_experts=8,
            **SMALL_MOE,
            n_shared_experts=1,
            first_k_dense_replace=1,
            **MLA,
            **GROUPED,
            **INDEXER,
        ),
    ),
    "dots1": (
        "Dots1Config",
        "Dots1ForCausalLM",
        dict(n_routed_experts=8, **SMALL_MOE, n_shared_experts=1, first_k_dense_replace=1),
    ),
    "dots3_note_text": (
        "Dots3NoteTextConfig",
        "Dots3NoteForCausalLM",
        dict(
            n_routed_experts=8,
            **SMALL_MOE,
            n_shared_experts=1,
            **MLA,
            **INDEXER,
            shared_experts_intermediate_size=16,
        ),
    ),
    "ernie4_5_moe": (
        "Ernie4_5_MoeConfig",
        "Ernie4_5_MoeForCausalLM",
        dict(
            moe_num_experts=8,
            moe_k=2,
            moe_intermediate_size=16,
            moe_num_shared_experts=1,
            moe_layer_start_index=1,
        ),
    ),
    "exaone_moe": (
        "ExaoneMoeConfig",
        "ExaoneMoeForCausalLM",
        dict(num_experts=8, **SMALL_MOE, num_shared_experts=1, first_k_dense_replace=1, sliding_window=16),
    ),
    "flex_olmo": ("FlexOlmoConfig", "FlexOlmoForCausalLM", dict(num_experts=8, num_experts_per_tok=2)),
    "flint": (
        "FlintConfig",
        "FlintForCausalLM",
        dict(
            num_experts=8,
            **SMALL_MOE,
            shared_expert_intermediate_size=16,
            mlp_only_layers=[0],
            head_dim=8,
            sliding_window=16,
        ),
    ),
    "gemma4_text": (
        "Gemma4TextConfig",
        "Gemma4ForCausalLM",
        dict(
            enable_moe_block=True,
            num_experts=8,
            top_k_experts=2,
            moe_intermediate_size=16,
            head_dim=8,
            global_head_dim=8,
            vocab_size_per_layer_input=96,
            hidden_size_per_layer_input=8,
            sliding_window=16,
        ),
    ),
    "glm4_moe": (
        "Glm4MoeConfig",
        "Glm4MoeForCausalLM",
        dict(n_routed_experts=8, **SMALL_MOE, n_shared_experts=1, first_k_dense_replace=1, head_dim=8),
    ),
    "glm4_moe_lite": (
        "Glm4MoeLiteConfig",
        "Glm4MoeLiteForCausalLM",
        dict(n_routed_experts=8, **SMALL_MOE, n_shared_experts=1, **MLA),
    ),
    "glm_moe_dsa": (
        "GlmMoeDsaConfig",
        "GlmMoeDsaForCausalLM",
        dict(n_routed_experts=8, **SMALL_MOE, n_shared_experts=1, first_k_dense_replace=1, **MLA, **INDEXER),
    ),
    "granitemoe_swa": (
        "GraniteMoeSWAConfig",
        "GraniteMoeSWAForCausalLM",
        dict(num_local_experts=8, num_experts_per_tok=2, sliding_window=16),
    ),
    "granitemoehybrid": (
        "GraniteMoeHybridConfig",
        "GraniteMoeHybridForCausalLM",
        dict(
            num_local_experts=8,
            num_experts_per_tok=2,
            shared_intermediate_size=16,
            mamba_n_heads=4,
            mamba_d_state=8,
            mamba_d_head=16,
            mamba_chunk_size=8,
        ),
    ),
    "granitemoeshared": (
        "GraniteMoeSharedConfig",
        "GraniteMoeSharedForCausalLM",
        dict(num_local_experts=8, num_experts_per_tok=2, shared_intermediate_size=16),
    ),
    "hunyuan_v1_moe": (
        "HunYuanMoEV1Config",
        "HunYuanMoEV1ForCausalLM",
        dict(num_experts=8, moe_topk=2, head_dim=8),
    ),
    "hy_v3": (
        "HYV3Config",
        "HYV3ForCausalLM",
        dict(num_experts=8, **SMALL_MOE, num_shared_experts=1, head_dim=8),
    ),
    "hy_v4": (
        "HYV4Config",
        "HYV4ForCausalLM",
        dict(n_routed_experts=8, **SMALL_MOE, n_shared_experts=1, **MLA, **INDEXER),
    ),
    "inkling_text": (
        "InklingTextConfig",
        "InklingForCausalLM",
        dict(n_routed_experts=8, **SMALL_MOE, n_shared_experts=1, head_dim=8, **SWA_HEADS),
    ),
    "inkling2_text": (
        "Inkling2TextConfig",
        "Inkling2ForCausalLM",
        dict(n_routed_experts=8, **SMALL_MOE, head_dim=8, **SWA_HEADS, unpadded_vocab_size=96),
    ),
    "jamba": (
        "JambaConfig",
        "JambaForCausalLM",
        dict(
            num_experts=8,
            num_experts_per_tok=2,
            expert_layer_period=1,
            expert_layer_offset=0,
            attn_layer_period=2,
            attn_layer_offset=1,
            mamba_d_state=8,
        ),
    ),
    "jetmoe": (
        "JetMoeConfig",
        "JetMoeForCausalLM",
        dict(num_local_experts=8, num_experts_per_tok=2, kv_channels=8),
    ),
    "kimi_linear": (
        "KimiLinearConfig",
        "KimiLinearForCausalLM",
        dict(
            num_experts=8,
            num_experts_per_token=2,
            moe_intermediate_size=16,
            num_shared_experts=1,
            **MLA,
            **LINEAR_ATTN,
        ),
    ),
    "kolibri1": (
        "Kolibri1Config",
        "Kolibri1ForCausalLM",
        dict(
            num_local_experts=8,
            **SMALL_MOE,
            shared_expert_intermediate_size=16,
            head_dim=8,
            sliding_window=16,
        ),
    ),
    "laguna": (
        "LagunaConfig",
        "LagunaForCausalLM",
        dict(num_experts=8, **SMALL_MOE, shared_expert_intermediate_size=16, head_dim=8, sliding_window=16),
    ),
    "lfm2_moe": ("Lfm2MoeConfig", "Lfm2MoeForCausalLM", dict(num_experts=8, **SMALL_MOE, num_dense_layers=1)),
    "llama4_text": (
        "Llama4TextConfig",
        "Llama4ForCausalLM",
        dict(num_local_experts=8, num_experts_per_tok=2, head_dim=8, intermediate_size_mlp=32),
    ),
    # 6 real and 2 zero-computation (identity) experts: 8 routing choices
    "longcat_flash": (
        "LongcatFlashConfig",
        "LongcatFlashForCausalLM",
        dict(
            n_routed_experts=6,
            zero_expert_num=2,
            moe_topk=2,
            ffn_hidden_size=32,
            expert_ffn_hidden_size=16,
            **MLA,
        ),
    ),
    "mellum": (
        "MellumConfig",
        "MellumForCausalLM",
        dict(num_local_experts=8, **SMALL_MOE, head_dim=8, sliding_window=16),
    ),
    "mimo_v2_flash": (
        "MiMoV2FlashConfig",
        "MiMoV2FlashForCausalLM",
        dict(n_routed_experts=8, **SMALL_MOE, head_dim=8, v_head_dim=8, sliding_window=16),
    ),
    "minimax": (
        "MiniMaxConfig",
        "MiniMaxForCausalLM",
        dict(num_local_experts=8, num_experts_per_tok=2, head_dim=8, block_size=4),
    ),
    "minimax_m2": (
        "MiniMaxM2Config",
        "MiniMaxM2ForCausalLM",
        dict(num_local_experts=8, num_experts_per_tok=2, head_dim=8),
    ),
    "minimax_m3_vl_text": (
        "MiniMaxM3VLTextConfig",
        "MiniMaxM3VLForCausalLM",
        dict(
            num_local_experts=8,
            num_experts_per_tok=2,
            head_dim=8,
            rotary_dim=8,
            dense_intermediate_size=32,
            shared_intermediate_size=16,
            index_head_dim=8,
            index_block_size=4,
            index_topk_blocks=2,
        ),
    ),
    # Mistral 4 scales queries by the Llama 4 rule, which reads these two RoPE fields.
    "mistral4": (
        "Mistral4Config",
        "Mistral4ForCausalLM",
        dict(
            n_routed_experts=8,
            **SMALL_MOE,
            n_shared_experts=1,
            first_k_dense_replace=1,
            **MLA,
            rope_parameters=dict(
                rope_type="default",
                rope_theta=10000.0,
                llama_4_scaling_beta=0.1,
                original_max_position_embeddings=128,
            ),
        ),
    ),
    "nemotron_h": (
        "NemotronHConfig",
        "NemotronHForCausalLM",
        dict(
            n_routed_experts=8,
            **SMALL_MOE,
            moe_shared_expert_intermediate_size=16,
            head_dim=8,
            mamba_num_heads=4,
            mamba_head_dim=16,
            ssm_state_size=8,
            n_groups=1,
            chunk_size=8,
        ),
    ),
    "qwen3_5_moe_text": (
        "Qwen3_5MoeTextConfig",
        "Qwen3_5MoeForCausalLM",
        dict(num_experts=8, **SMALL_MOE, shared_expert_intermediate_size=16, head_dim=8, **GATED_DELTA),
    ),
    "qwen3_next": (
        "Qwen3NextConfig",
        "Qwen3NextForCausalLM",
        dict(num_experts=8, **SMALL_MOE, shared_expert_intermediate_size=16, head_dim=8, **GATED_DELTA),
    ),
    "qwen4_exp_text": (
        "Qwen4ExpTextConfig",
        "Qwen4ExpForCausalLM",
        dict(
            num_experts=8,
            **SMALL_MOE,
            shared_expert_intermediate_size=16,
            head_dim=8,
            **GATED_DELTA,
            hc_lowrank=8,
            indexer_n_heads=2,
            indexer_kv_heads=1,
            indexer_head_dim=8,
            indexer_budget=8,
            indexer_compress_ratio=2,
        ),
    ),
    "solar_open": (
        "SolarOpenConfig",
        "SolarOpenForCausalLM",
        dict(n_routed_experts=8, **SMALL_MOE, n_shared_experts=1, head_dim=8),
    ),
    # New in transformers 5.24. Sarvam's two families reuse DeepSeek-V3's and GLM-4-MoE's model classes.
    "inkling2_loop_text": (
        "Inkling2LoopTextConfig",
        "Inkling2LoopForCausalLM",
        dict(n_routed_experts=8, **SMALL_MOE, head_dim=8, **SWA_HEADS, unpadded_vocab_size=96),
    ),
    "lara_mini": (
        "LaraMiniConfig",
        "LaraMiniForCausalLM",
        dict(num_experts=8, **SMALL_MOE, shared_expert_intermediate_size=16, head_dim=8, **GATED_DELTA),
    ),
    "sarvam_mla": (
        "SarvamMLAConfig",
        "DeepseekV3ForCausalLM",
        dict(n_routed_experts=8, **SMALL_MOE, n_shared_experts=1, first_k_dense_replace=1, **MLA, **GROUPED),
    ),
    "sarvam_moe": ("SarvamMoEConfig", "Glm4MoeForCausalLM", GLM4_MOE_SHAPE),
    # New in transformers 5.25, skipped under an older one. Param2 reuses GLM-4-MoE's model classes.
    "ergo": (
        "ErgoConfig",
        "ErgoForCausalLM",
        dict(
            num_experts=8,
            **SMALL_MOE,
            first_dense_intermediate_size=32,
            shared_intermediate_size=16,
            sliding_window=16,
        ),
    ),
    "kolibri1_1": (
        "Kolibri1_1Config",
        "Kolibri1_1ForCausalLM",
        dict(
            num_experts=8,
            **SMALL_MOE,
            shared_expert_intermediate_size=16,
            mlp_only_layers=[0],
            mlp_only_intermediate_size=32,
            head_dim=16,  # a multiple of 16, for its NVFP4 rounding of keys and values
            sliding_window=16,
            index_topk=8,
            index_pool_size=32,
            index_compression=4,
            index_num_heads=2,
            index_num_local_tokens=4,
            index_num_sink_tokens=2,
        ),
    ),
    "minicpm5_moe": (
        "MiniCPM5MoeConfig",
        "MiniCPM5MoeForCausalLM",
        dict(
            n_routed_experts=8,
            **SMALL_MOE,
            n_shared_experts=1,
            first_k_dense_replace=1,
            head_dim=8,
            **GROUPED,
        ),
    ),
    "param2moe": ("Param2MoeConfig", "Glm4MoeForCausalLM", GLM4_MOE_SHAPE),
}

# MoE families whose routing RoMA cannot represent: discovery must refuse them, saying why.
REFUSED: dict[str, tuple[str, str, dict]] = {
    # experts scored by sqrt(softplus(logit)); its first layers route by a frozen token-id table
    "deepseek_v4": (
        "DeepseekV4Config",
        "DeepseekV4ForCausalLM",
        dict(
            n_routed_experts=8,
            **SMALL_MOE,
            n_shared_experts=1,
            head_dim=16,
            q_lora_rank=16,
            qk_rope_head_dim=8,
            o_groups=2,
            o_lora_rank=16,
            num_key_value_heads=1,
            **INDEXER,
            sliding_window=16,
        ),
    ),
    # an MLP router carrying state between layers, with a "skip" class; top-1 only
    "zaya": (
        "ZayaConfig",
        "ZayaForCausalLM",
        dict(
            num_experts=8, num_experts_per_tok=1, moe_intermediate_size=16, head_dim=8, router_hidden_size=16
        ),
    ),
    # product-key routing: the router scores two halves of an expert key, not experts
    "doge": ("DogeConfig", "DogeForCausalLM", dict(is_moe=True, num_experts=16, num_experts_per_tok=2)),
}

# Config kwargs that depend on the number of layers. Hybrid families get at least one attention layer
# (a cache of linear-attention layers only cannot report its length) and a dense first layer where the
# family's default would leave none.
PER_LAYER = {
    "gpt_oss": lambda n: dict(layer_types=["full_attention"] * n),
    "beam": lambda n: dict(mlp_layer_types=["dense"] + ["sparse"] * (n - 1)),
    "longcat_flash": lambda n: dict(num_hidden_layers=2 * n),  # each decoder layer holds two sub-layers
    "lfm2_moe": lambda n: dict(layer_types=(["conv", "full_attention"] * n)[:n]),
    "nemotron_h": lambda n: dict(
        layers_block_type=(["linear_attention", "moe", "full_attention", "moe"] * n)[:n]
    ),
    "granitemoehybrid": lambda n: dict(layer_types=(["linear_attention", "full_attention"] * n)[:n]),
    "bailing_hybrid": lambda n: dict(layer_types=(["linear_attention", "full_attention"] * n)[:n]),
    "kimi_linear": lambda n: dict(
        layer_types=(["linear_attention", "full_attention"] * n)[:n],
        mlp_layer_types=["dense"] + ["sparse"] * (n - 1),
    ),
}


# Fix-ups applied to the built config before the model is made.
CONFIG_FIXES = {
    # transformers 5.23's DbrxAttention reads ``attn_config.rope_theta``, a field its config no longer keeps.
    "dbrx": lambda config: setattr(config.attn_config, "rope_theta", 10000.0),
}


def build_tiny_model(
    family: str, num_layers: int = 4, seed: int = 0, **overrides
) -> transformers.PreTrainedModel:
    """A randomly initialised tiny causal LM of ``family``, fp32, eval mode (``overrides``: config kwargs)."""
    config_name, model_name, extra = FAMILIES[family] if family in FAMILIES else REFUSED[family]
    for name in (config_name, model_name):
        if not hasattr(transformers, name):  # a family newer than the installed release
            pytest.skip(f"{name} is not in the installed transformers {transformers.__version__}")
    kwargs = {**COMMON, "num_hidden_layers": num_layers, **extra}
    if family in PER_LAYER:
        kwargs.update(PER_LAYER[family](num_layers))
    kwargs.update(overrides)
    config = getattr(transformers, config_name)(**kwargs)
    if family in CONFIG_FIXES:
        CONFIG_FIXES[family](config)
    torch.manual_seed(seed)
    model = getattr(transformers, model_name)(config).float().eval()
    # Routers start at zero in some families; random weights make routing non-trivial. Biases used only
    # to pick experts (``e_score_correction_bias``) keep their initial zero, as in a freshly made model.
    with torch.no_grad():
        for name, p in model.named_parameters():
            routing = ("gate" in name or "router" in name) and "correction_bias" not in name
            if p.dim() >= 1 and routing and p.abs().sum() == 0:
                p.normal_(0, 0.5)
    return model


WORDS = [
    "Question",
    "Answer",
    "question",
    "answer",
    "the",
    "a",
    "of",
    "is",
    "what",
    "which",
    "to",
    "in",
    "and",
    "or",
    "not",
    "yes",
    "no",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "red",
    "blue",
    "green",
    "cat",
    "dog",
    "bird",
    "fish",
    "big",
    "small",
    "more",
    "less",
    "than",
    "plus",
    "minus",
    "equals",
    "A",
    "B",
    "C",
    "D",
    "E",
    "F",
    "G",
    "H",
    "I",
    "J",
    "?",
    ".",
    ",",
    ":",
    "!",
    "(",
    ")",
    "_",
]


def routed_model(family: str, layers: list[int], num_layers: int = 4) -> transformers.PreTrainedModel:
    """A tiny model whose routing matters in ``layers``: experts and routers there are scaled up 10x, so
    routing is peaked (as trained routers are, rather than near ties) and choosing other experts
    changes the answer. Shared experts (``.shared_experts.``) are left alone."""
    model = build_tiny_model(family, num_layers=num_layers)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if not any(f"layers.{layer}." in name for layer in layers):
                continue
            if ".experts." in name or ".gate.weight" in name:
                p.mul_(10.0)
    return model


def build_tiny_tokenizer():
    """A word-level tokenizer over a small vocabulary (letters A-J included), built offline."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3}
    for w in WORDS:
        vocab.setdefault(w, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()]
    )
    from tokenizers import decoders

    tok.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>", unk_token="<unk>"
    )


def save_tiny_model(path, family: str = "olmoe", num_layers: int = 4, seed: int = 0):
    """Save a tiny random MoE model and its tokenizer as a Hugging Face folder; returns the path."""
    tokenizer = build_tiny_tokenizer()
    model = build_tiny_model(family, num_layers=num_layers, seed=seed)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
