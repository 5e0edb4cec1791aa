"""The sharded training path (``--shard fsdp``) timed on one lent GPU, on a random full-size config.

The model is one of docs/scaling.md's (Qwen3-30B-A3B by default: all 48 layers, 61 GB in bf16, fits
one 141 GB card), built on the meta device, sharded with the project's own ``shard_model`` over a
one-process group, materialised on the GPU and filled with random weights; no checkpoint is read.
Synthetic samples, routing and neighbours (as ``gpu_train_olmoe.py``) then train the last 5 routers
with the project's trainer. The same model unsharded (``--shard none``) is timed after it, so the
line printed last is the per-step cost of the FSDP hooks and copies on one card, next to the peak
memory that ``benchmarks/memory_plan.py`` predicts for that shape. With more GPUs, launch it with
torchrun and the shards and all-gathers are real.

    PYTHONPATH=src python benchmarks/gpu_train_fsdp.py --out $OUT/fsdp.json                 # Qwen3-30B-A3B
    PYTHONPATH=src python benchmarks/gpu_train_fsdp.py --model Qwen3-235B-A22B --num-layers 12
    PYTHONPATH=src python benchmarks/gpu_train_fsdp.py --quick --device cpu                 # smoke test
"""

from __future__ import annotations

import argparse
import gc
import os
import socket
import tempfile
import time
from collections.abc import Sequence

import torch
import torch.distributed as dist

try:  # run as a script (benchmarks/ on sys.path) or imported as benchmarks.gpu_train_fsdp
    import _common as common
    import memory_plan
    from gpu_train_olmoe import synthetic_store
except ImportError:  # pragma: no cover
    from benchmarks import _common as common
    from benchmarks import memory_plan
    from benchmarks.gpu_train_olmoe import synthetic_store

from moe_roma.distributed.fsdp import resident_parameter_bytes, shard_model  # noqa: E402
from moe_roma.manifold.graph import NeighbourSearch, build_neighbour_graph  # noqa: E402
from moe_roma.methods.roma.config import train_config  # noqa: E402
from moe_roma.methods.roma.trainer import RouterTrainer  # noqa: E402
from moe_roma.models.discovery import discover_routers  # noqa: E402

QUICK = dict(
    hidden_size=64,
    num_hidden_layers=6,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=16,
    num_experts=8,
    num_experts_per_tok=2,
    moe_intermediate_size=32,
    intermediate_size=128,
    vocab_size=512,
)


def _join_group(device: torch.device) -> None:
    """torchrun's group when launched by it; else a group of this one process."""
    if dist.is_initialized():
        return
    backend = "nccl" if device.type == "cuda" else "gloo"
    if "WORLD_SIZE" in os.environ:
        dist.init_process_group(backend)
        return
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)


def build(name: str, num_layers: int | None, device: torch.device, shard: bool, quick: bool):
    """The full-size architecture, random bf16 weights, sharded (FSDP2) or whole, made on ``device``."""
    import transformers
    from transformers import AutoModelForCausalLM

    config_name, kwargs = memory_plan.MODELS[name]
    kwargs = {**kwargs, **(QUICK if quick else {})}
    if num_layers is not None:
        kwargs["num_hidden_layers"] = num_layers
    config = getattr(transformers, config_name)(**kwargs)
    dtype = torch.float32 if device.type == "cpu" else torch.bfloat16
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    info = discover_routers(model)
    if shard:
        from torch.distributed.device_mesh import init_device_mesh

        shard_model(model, info, init_device_mesh(device.type, (dist.get_world_size(),)))
    model.to_empty(device=device)
    gen = torch.Generator(device=device).manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            local = p.to_local() if hasattr(p, "to_local") else p
            local.normal_(0.0, 0.02, generator=gen)
        for (
            module
        ) in model.modules():  # buffers to_empty left uninitialised: rotary frequencies, expert biases
            if hasattr(module, "inv_freq"):
                with torch.device(device):
                    fresh = type(module)(config)
                for key, buf in fresh.named_buffers(recurse=False):
                    getattr(module, key).copy_(buf)
            elif any(True for _ in module.buffers(recurse=False)):
                for buf in module.buffers(recurse=False):
                    buf.zero_()
    model.eval()
    model.requires_grad_(False)
    return model, info


def run_arm(args, shard: bool, acc) -> dict:
    device = torch.device(args.device)
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    t0 = time.perf_counter()
    model, info = build(args.model, args.num_layers, device, shard, args.quick)
    acc.sync()
    build_s = time.perf_counter() - t0
    layers = info.moe_layers[-5:]
    tok = common.word_tokenizer(model.config.vocab_size)
    store = synthetic_store(
        args.samples, args.seq_len, model.config.vocab_size, layers, info.num_experts, gen
    )
    emb = torch.nn.functional.normalize(torch.randn(args.samples, 384, generator=gen), dim=1).numpy()
    graph = build_neighbour_graph(emb, store.successful, NeighbourSearch(k=3))
    cfg = train_config(
        layers="last5",
        scoring="letter",
        max_length=args.seq_len,
        schedule={"epochs": args.epochs, "batch_size": args.batch_size},
        optimizer={"lr": 7e-05},
        runtime={"log_every": 10},
    )
    trainer = RouterTrainer(
        model, tok, store, cfg, tempfile.mkdtemp(prefix="gpu_fsdp_run"), graph=graph, progress=False
    )
    acc.sync()
    acc.reset_peak()
    result = trainer.train()
    acc.sync()
    steps = max(result.steps, 1)
    out = {
        "shard": "fsdp" if shard else "none",
        "params": sum(p.numel() for p in model.parameters()),
        "resident_parameter_gib": round(resident_parameter_bytes(model) / 2**30, 2),
        "build_seconds": round(build_s, 1),
        "steps": result.steps,
        "prefix_cache_seconds": round(trainer.timings["prefix_cache_seconds"], 2),
        "seconds_per_step": round(trainer.timings["loop_seconds"] / steps, 4),
        "peak_gpu_memory_gib": (lambda p: p and round(p, 2))(acc.peak_gib()),
    }
    del trainer, model
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return out


def main(argv: Sequence[str] | None = None) -> dict:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="Qwen3-30B-A3B", choices=list(memory_plan.MODELS))
    ap.add_argument(
        "--num-layers", type=int, default=None, help="keep only the first N layers (default: all)"
    )
    ap.add_argument("--samples", type=int, default=1024)
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--arms", default="fsdp,none", help="fsdp, none or both, in that order")
    ap.add_argument("--out", default=None)
    ap.add_argument("--device", default="cuda")
    ap.add_argument(
        "--quick", action="store_true", help="a tiny config of the same family and few samples (smoke test)"
    )
    args = ap.parse_args(argv)
    if args.quick:
        args.samples, args.seq_len, args.batch_size = 32, 16, 8
    acc = common.Accelerator(args.device)
    _join_group(torch.device(args.device))
    try:
        arms = {arm: run_arm(args, arm == "fsdp", acc) for arm in args.arms.split(",")}
    finally:
        dist.destroy_process_group()
    shape = memory_plan.shape(args.model, 5) if not args.quick and args.num_layers is None else None
    report = {
        "device": acc.name(),
        "torch": torch.__version__,
        "model": args.model,
        "num_layers": args.num_layers,
        "samples": args.samples,
        "seq_len": args.seq_len,
        "batch_size": args.batch_size,
        "arms": arms,
    }
    if shape is not None:
        planned = memory_plan.plan(
            shape,
            1,
            141,
            989.0,
            1,
            memory_plan.Workload(samples=args.samples, seq_len=args.seq_len, batch=args.batch_size),
        )
        report["planned_per_gpu_gib_one_card"] = round(planned["per_gpu_gb"] * 1e9 / 2**30, 2)
    common.emit_report(report, args.out)
    if "fsdp" in arms and "none" in arms:
        ratio = arms["fsdp"]["seconds_per_step"] / max(arms["none"]["seconds_per_step"], 1e-9)
        report["fsdp_over_none_per_step"] = round(ratio, 2)
        print(f"fsdp / none seconds per step on one device: {ratio:.2f}x")
    return report


if __name__ == "__main__":
    main()
