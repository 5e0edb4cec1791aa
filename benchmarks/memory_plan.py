"""The memory and time plan of docs/scaling.md, computed (not measured) from the models' public configs.

Each model is built on the meta device from its configuration (no weights, no memory), so every
parameter count is exact for the architecture transformers builds. Everything else is arithmetic on
those counts and the stated workload; docs/scaling.md shows the formulas. Run it to print the tables:

    PYTHONPATH=src python benchmarks/memory_plan.py            # markdown tables
    PYTHONPATH=src python benchmarks/memory_plan.py --json     # the same numbers as JSON
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

_SRC = Path(__file__).resolve().parents[1] / "src"
if _SRC.is_dir() and str(_SRC) not in sys.path:
    sys.path.insert(0, str(_SRC))

GB = 1e9
# Public configs (config.json of each model on the Hugging Face hub); DeepSeek-V3's are also
# transformers' DeepseekV3Config defaults. Only what shapes the weights is given.
MODELS: dict[str, tuple[str, dict]] = {
    "Qwen3-30B-A3B": (
        "Qwen3MoeConfig",
        dict(
            vocab_size=151936,
            hidden_size=2048,
            num_hidden_layers=48,
            num_attention_heads=32,
            num_key_value_heads=4,
            head_dim=128,
            num_experts=128,
            num_experts_per_tok=8,
            moe_intermediate_size=768,
            intermediate_size=6144,
            tie_word_embeddings=False,
            mlp_only_layers=[],
        ),
    ),
    "Qwen3-235B-A22B": (
        "Qwen3MoeConfig",
        dict(
            vocab_size=151936,
            hidden_size=4096,
            num_hidden_layers=94,
            num_attention_heads=64,
            num_key_value_heads=4,
            head_dim=128,
            num_experts=128,
            num_experts_per_tok=8,
            moe_intermediate_size=1536,
            intermediate_size=12288,
            tie_word_embeddings=False,
            mlp_only_layers=[],
        ),
    ),
    "DeepSeek-V3": (
        "DeepseekV3Config",
        dict(
            vocab_size=129280,
            hidden_size=7168,
            num_hidden_layers=61,
            num_attention_heads=128,
            num_key_value_heads=128,
            n_routed_experts=256,
            n_shared_experts=1,
            num_experts_per_tok=8,
            moe_intermediate_size=2048,
            intermediate_size=18432,
            first_k_dense_replace=3,
            q_lora_rank=1536,
            kv_lora_rank=512,
            qk_rope_head_dim=64,
            qk_nope_head_dim=128,
            v_head_dim=128,
            n_group=8,
            topk_group=4,
            tie_word_embeddings=False,
        ),
    ),
}

# Clusters: (label, GPUs per node, GPU memory in GB, bf16 dense peak TFLOP/s of one GPU).
GPUS = {"8x80GB": (8, 80, 989.0), "8x141GB": (8, 141, 989.0)}  # H100 SXM / H200: same bf16 peak


@dataclass
class Workload:
    """What one run trains on: the defaults of roma train (last5, batch 32, 3 epochs, letter scoring)."""

    samples: int = 5000
    seq_len: int = 256  # prompt tokens per sample (letter scoring: one sequence per sample)
    batch: int = 32
    tuned: int = 5
    epochs: int = 3
    mfu: float = 0.3  # share of the bf16 peak the tuned layers' small matmuls reach (assumed)
    nvlink_gbs: float = 300.0  # achieved all-gather bandwidth per GPU inside a node (assumed)
    ib_gbs: float = 40.0  # achieved per-GPU bandwidth across nodes, 400 Gb/s NICs (assumed)


@dataclass
class Shape:
    name: str
    total: int  # parameters
    layer_max: int  # parameters of the largest decoder layer
    tuned_layer: int  # parameters of one of the last (tuned) layers
    tuned_active: int  # parameters one token meets in a tuned layer (attention + router + top-k + shared)
    routers_all: int  # router parameters of every MoE layer (replicated on each rank)
    routers_tuned: int  # router parameters of the tuned layers (fp32 + AdamW)
    hidden: int
    vocab: int
    layers: int
    attn_saved: int  # attention activations saved per token per layer (elements)
    moe_saved: int  # MoE activations saved per token per layer (elements)
    attn_inner: int  # heads x head dim of the score / value products


def shape(name: str, tuned: int) -> Shape:
    import transformers
    from transformers import AutoModelForCausalLM

    from moe_roma.models.discovery import discover_routers

    config_name, kwargs = MODELS[name]
    config = getattr(transformers, config_name)(**kwargs)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    info = discover_routers(model)
    layers = model.model.layers
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    last = layers[len(layers) - 1]
    mlp = last.mlp
    experts = mlp.experts
    e = info.num_experts
    k = config.num_experts_per_tok
    expert_params = count(experts) // e
    shared = count(mlp.shared_experts) if getattr(mlp, "shared_experts", None) is not None else 0
    shared += count(mlp.shared_expert) if getattr(mlp, "shared_expert", None) is not None else 0
    router = sum(
        p.numel() for n in info.routers[len(layers) - 1].parameter_names for p in [model.get_parameter(n)]
    )
    attn = count(last.self_attn)
    h = config.hidden_size
    moe_i = config.moe_intermediate_size
    if hasattr(config, "kv_lora_rank"):  # multi-head latent attention
        qk = config.qk_nope_head_dim + config.qk_rope_head_dim
        heads = config.num_attention_heads
        attn_saved = (
            2 * h
            + config.q_lora_rank
            + config.kv_lora_rank
            + config.qk_rope_head_dim
            + heads * (2 * qk + 2 * config.v_head_dim)
        )
        attn_inner = heads * (qk + config.v_head_dim) // 2
    else:
        d = config.head_dim
        attn_saved = 2 * h + 2 * config.num_attention_heads * d + 2 * config.num_key_value_heads * d
        attn_inner = config.num_attention_heads * d
    shared_i = (shared // (3 * h)) if shared else 0
    moe_saved = 2 * h + e + k * (h + 3 * moe_i) + (h + 3 * shared_i if shared else 0)
    routers_all = sum(
        model.get_parameter(n).numel() for r in info.routers.values() for n in r.parameter_names
    )
    tuned_layers = info.moe_layers[-tuned:]
    routers_tuned = sum(
        model.get_parameter(n).numel() for li in tuned_layers for n in info.routers[li].parameter_names
    )
    return Shape(
        name,
        count(model),
        max(count(layer) for layer in layers),
        count(last),
        attn + router + k * expert_params + shared,
        routers_all,
        routers_tuned,
        h,
        config.vocab_size,
        len(layers),
        attn_saved,
        moe_saved,
        attn_inner,
    )


def plan(
    s: Shape, gpus_per_node: int, mem_gb: float, peak_tf: float, nodes: int, w: Workload, shard: str = "fsdp"
) -> dict:
    """One row: per-GPU bytes, per-step FLOPs and traffic; ``shard="none"``: a whole model per GPU (DDP)."""
    n = gpus_per_node * nodes
    batch = -(-max(w.batch, n) // n) * n  # the global batch must be a multiple of the world size
    bf16 = 2
    shards = n if shard == "fsdp" else 1
    weights = (s.total - s.routers_all) * bf16 / shards + s.routers_all * bf16  # shards + replicated routers
    gathered = 2 * s.layer_max * bf16 if shard == "fsdp" else 0  # the layer being run and the one prefetched
    cache_total = w.samples * w.seq_len * s.hidden * bf16  # every rank holds the whole prefix cache
    tokens_rank = batch // n * w.seq_len
    activations = tokens_rank * w.tuned * (s.attn_saved + s.moe_saved) * bf16
    optimizer = s.routers_tuned * (4 + 4 + 8)  # fp32 master, fp32 gradient, AdamW's two fp32 moments
    device_fixed = weights + gathered + activations + optimizer
    cache_on_device = cache_total <= 0.6 * (
        mem_gb * GB - device_fixed
    )  # runtime.prefix_cache_device_fraction
    per_gpu = device_fixed + (cache_total if cache_on_device else 0)
    tokens_step = batch * w.seq_len
    linear_fwd = 2 * s.tuned_active * w.tuned * tokens_step
    attn_fwd = 4 * w.seq_len * s.attn_inner * w.tuned * tokens_step  # QK^T and AV, causal mask not discounted
    head_fwd = 2 * s.hidden * s.vocab * batch  # logits at the last prompt position only
    # Only activation gradients flow back (frozen weights get none): backward ~ forward for the linear layers,
    # ~ 2x for the attention products.
    flops_step = 2 * (linear_fwd + head_fwd) + 3 * attn_fwd
    compute_s = flops_step / n / (peak_tf * 1e12 * w.mfu)
    # Forward + backward re-gather of the tuned layers, per GPU; DDP moves only the router gradients.
    gather_bytes = (
        2 * w.tuned * s.tuned_layer * bf16 * (n - 1) / n if shard == "fsdp" else 2 * s.routers_tuned * 4
    )
    comm_s = gather_bytes / ((w.nvlink_gbs if nodes == 1 else w.ib_gbs) * GB)
    steps = math.ceil(w.samples / batch) * w.epochs
    # The cache fill runs the frozen layers once over every token, on every rank (approximated with the tuned
    # layers' active parameters for every layer).
    prefix_flops = 2 * s.tuned_active * (s.layers - w.tuned) * w.samples * w.seq_len
    return {
        "model": s.name,
        "shard": shard,
        "gpus": f"{nodes}x{gpus_per_node}x{mem_gb:g}GB",
        "n": n,
        "batch": batch,
        "weights_gb": weights / GB,
        "gathered_layers_gb": gathered / GB,
        "prefix_cache_gb": cache_total / GB,
        "prefix_cache_on": "GPU" if cache_on_device else "host (pinned)",
        "activations_gb": activations / GB,
        "optimizer_gb": optimizer / GB,
        "per_gpu_gb": per_gpu / GB,
        "fits": per_gpu <= 0.95 * mem_gb * GB,
        "flops_step": flops_step,
        "compute_s_step": compute_s,
        "allgather_gb_step": gather_bytes / GB,
        "comm_s_step": comm_s,
        "steps": steps,
        "run_hours": steps * max(compute_s, comm_s) / 3600,
        "prefix_fill_flops_per_rank": prefix_flops,
        "prefix_fill_s": prefix_flops / (peak_tf * 1e12 * w.mfu),
    }


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    w = Workload()
    rows, shapes = [], {}
    for name in MODELS:
        s = shapes[name] = shape(name, w.tuned)
        for per_node, mem, peak in GPUS.values():
            if name == "Qwen3-30B-A3B":
                rows.append(plan(s, per_node, mem, peak, 1, w, shard="none"))  # fits whole on one GPU
            for nodes in (1, 2, 4, 8):
                row = plan(s, per_node, mem, peak, nodes, w)
                rows.append(row)
                if row["fits"]:
                    break  # the smallest number of nodes that fits
    if args.json:
        print(
            json.dumps(
                {"workload": asdict(w), "shapes": [asdict(s) for s in shapes.values()], "plans": rows},
                indent=1,
            )
        )
        return rows
    print(
        "| model | parameters | largest layer | tuned layer | active per token (tuned layer) "
        "| routers (all / tuned) |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for s in shapes.values():
        print(
            f"| {s.name} | {s.total / 1e9:.2f} B | {s.layer_max / 1e9:.3f} B | {s.tuned_layer / 1e9:.3f} B | "
            f"{s.tuned_active / 1e6:.0f} M | {s.routers_all / 1e6:.2f} M / {s.routers_tuned / 1e6:.2f} M |"
        )
    print()
    print(
        "| model | --shard | GPUs | batch | weights | 2 gathered layers | prefix cache | activations "
        "| optimiser | per GPU | fits | TFLOP/step | compute s/step | all-gather GB/step | comm s/step "
        "| run h | cache fill s |"
    )
    print(
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: | "
        "---: | ---: | ---: |"
    )
    for r in rows:
        print(
            f"| {r['model']} | {r['shard']} | {r['gpus']} | {r['batch']} | {r['weights_gb']:.1f} | "
            f"{r['gathered_layers_gb']:.1f} | {r['prefix_cache_gb']:.1f} ({r['prefix_cache_on']}) | "
            f"{r['activations_gb']:.2f} | {r['optimizer_gb']:.3f} | {r['per_gpu_gb']:.1f} | "
            f"{'yes' if r['fits'] else 'no'} | {r['flops_step'] / 1e12:.1f} | {r['compute_s_step']:.3f} | "
            f"{r['allgather_gb_step']:.1f} | {r['comm_s_step']:.3f} | {r['run_hours']:.2f} | "
            f"{r['prefix_fill_s']:.0f} |"
        )
    return rows


if __name__ == "__main__":
    main()
