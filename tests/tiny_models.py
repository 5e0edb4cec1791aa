"""Tiny random MoE models of every supported family, built in-process (no downloads)."""

from __future__ import annotations

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

# family -> (config class, model class, extra config kwargs)
FAMILIES: dict[str, tuple[str, str, dict]] = {
    "olmoe": ("OlmoeConfig", "OlmoeForCausalLM", dict(num_experts=8, num_experts_per_tok=2)),
    "qwen2_moe": (
        "Qwen2MoeConfig",
        "Qwen2MoeForCausalLM",
        dict(num_experts=8, num_experts_per_tok=2, moe_intermediate_size=16, shared_expert_intermediate_size=16,
             mlp_only_layers=[0]),
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
        dict(n_routed_experts=8, num_experts_per_tok=2, moe_intermediate_size=16, n_shared_experts=1,
             first_k_dense_replace=1, n_group=1, topk_group=1, kv_lora_rank=16, q_lora_rank=16,
             qk_rope_head_dim=8, qk_nope_head_dim=8, v_head_dim=8, head_dim=8, num_key_value_heads=4,
             rope_scaling=None),
    ),
    "gpt_oss": (
        "GptOssConfig",
        "GptOssForCausalLM",
        dict(num_local_experts=8, num_experts_per_tok=2, head_dim=8, sliding_window=16,
             layer_types=None),
    ),
    "granitemoe": ("GraniteMoeConfig", "GraniteMoeForCausalLM", dict(num_local_experts=8, num_experts_per_tok=2)),
    "phimoe": ("PhimoeConfig", "PhimoeForCausalLM", dict(num_local_experts=8, num_experts_per_tok=2)),
}


def build_tiny_model(family: str, num_layers: int = 4, seed: int = 0) -> transformers.PreTrainedModel:
    """A randomly initialised tiny causal LM of ``family`` in fp32 eval mode."""
    config_name, model_name, extra = FAMILIES[family]
    kwargs = {**COMMON, "num_hidden_layers": num_layers, **extra}
    if family == "gpt_oss":
        kwargs["layer_types"] = ["full_attention"] * num_layers
    config = getattr(transformers, config_name)(**kwargs)
    torch.manual_seed(seed)
    model = getattr(transformers, model_name)(config).float().eval()
    # Routers start at zero in some families; random weights make routing non-trivial.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() >= 1 and ("gate" in name or "router" in name) and p.abs().sum() == 0:
                p.normal_(0, 0.5)
    return model


WORDS = ["Question", "Answer", "question", "answer", "the", "a", "of", "is", "what", "which", "to", "in", "and", "or", "not", "yes", "no", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "red", "blue", "green", "cat", "dog", "bird", "fish", "big", "small", "more", "less", "than", "plus", "minus", "equals", "A", "B", "C", "D", "E", "F", "G", "H", "I", "J", "?", ".", ",", ":", "!", "(", ")", "_"]


def build_tiny_tokenizer():
    """A word-level tokenizer over a small vocabulary (letters A-J included), built offline."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3}
    for w in WORDS:
        vocab.setdefault(w, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
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
