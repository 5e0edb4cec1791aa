"""RoMA training throughput on a randomly initialised full-size OLMoE-1B-7B (GPU).

No weights are needed for timing: the architecture (16 layers, hidden 2048, 64 experts, top-8) is
built from its configuration with random weights in bf16. Synthetic samples of ``--seq-len`` tokens,
a synthetic routing store and neighbour graph, and the project's own trainer (bf16 autocast, fp32
routers, prefix replay, ``logits_to_keep``) are timed end to end; the naive arm (full forward over
every layer with full-vocabulary logits at every position, as the public code does) is timed on a
few steps for the per-step ratio.

    PYTHONPATH=src python benchmarks/gpu_train_olmoe.py --samples 2048 --epochs 1
    PYTHONPATH=src python benchmarks/gpu_train_olmoe.py --quick --device cpu   # smoke test
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Sequence

import torch

try:  # run as a script (benchmarks/ on sys.path) or imported as benchmarks.gpu_train_olmoe
    import _common as common
except ImportError:  # pragma: no cover
    from benchmarks import _common as common

from moe_roma.manifold.graph import NeighbourSearch, build_neighbour_graph  # noqa: E402
from moe_roma.methods.common.batches import make_batch  # noqa: E402
from moe_roma.methods.roma.config import TrainConfig, train_config  # noqa: E402
from moe_roma.methods.roma.trainer import RouterTrainer  # noqa: E402
from moe_roma.models.discovery import discover_routers  # noqa: E402
from moe_roma.routing.store import RoutingStore  # noqa: E402


def synthetic_store(n: int, seq_len: int, vocab: int, layers: list[int], experts: int, gen) -> RoutingStore:
    ids = torch.randint(64, vocab, (n, seq_len - 1), generator=gen)
    texts = [" ".join(f"w{t}" for t in row.tolist()) + " A" for row in ids]  # seq_len tokens each
    routing = torch.distributions.Dirichlet(torch.full((experts,), 0.3)).sample((n, len(layers)))
    answers = torch.randint(0, 4, (n,), generator=gen).tolist()
    correct = (torch.rand(n, generator=gen) < 0.6).tolist()
    return RoutingStore(
        ids=[f"s{i}" for i in range(n)],
        input_texts=texts,
        layers=layers,
        routing=routing,
        answer_index=answers,
        model_answer=answers,
        is_correct=correct,
        token_ids=[2] * n,
        token_texts=["A"] * n,
        choices=[("A", "B", "C", "D")] * n,
    )


def naive_step(model, trainer, items, optimizer) -> None:
    """What the public code does per step: every layer, every position's full-vocabulary logits."""
    batch = make_batch(items, trainer.pad)
    device = model.device
    with torch.autocast(device.type, dtype=torch.bfloat16):
        out = model(
            input_ids=batch.input_ids.to(device),
            attention_mask=batch.attention_mask.to(device),
            use_cache=False,
        )
    letters = out.logits[:, -1, trainer.letter_ids[:4]].float()
    loss = torch.nn.functional.cross_entropy(
        letters, torch.tensor([it.answer for it in items], device=device)
    )
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def main(argv: Sequence[str] | None = None) -> dict:
    ap = argparse.ArgumentParser()
    ap.add_argument("--samples", type=int, default=2048)
    ap.add_argument("--seq-len", type=int, default=200)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--naive-steps", type=int, default=5)
    ap.add_argument("--gradient-checkpointing", action="store_true")
    ap.add_argument(
        "--cache-fraction",
        type=float,
        default=TrainConfig().runtime.prefix_cache_device_fraction,
        help="keep the prefix cache on the GPU when it fits in this share of free memory",
    )
    ap.add_argument("--out", default=None)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--quick", action="store_true", help="a tiny model and few samples, for the smoke test")
    args = ap.parse_args(argv)
    if args.quick:
        args.samples, args.seq_len, args.batch_size, args.naive_steps = 64, 20, 8, 2
    acc = common.Accelerator(args.device)
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    model = common.olmoe_1b_7b(args.device, torch.bfloat16, common.OLMOE_QUICK if args.quick else None)
    config = model.config
    n_params = sum(p.numel() for p in model.parameters())
    info = discover_routers(model)
    layers = info.moe_layers[-5:]
    tok = common.word_tokenizer(config.vocab_size)
    store = synthetic_store(args.samples, args.seq_len, config.vocab_size, layers, info.num_experts, gen)
    emb = torch.nn.functional.normalize(torch.randn(args.samples, 384, generator=gen), dim=1).numpy()
    graph = build_neighbour_graph(emb, store.successful, NeighbourSearch(k=3))
    cfg = train_config(
        layers="last5",
        scoring="letter",
        max_length=args.seq_len,
        schedule={"epochs": args.epochs, "batch_size": args.batch_size},
        optimizer={"lr": 7e-05},
        runtime={
            "gradient_checkpointing": args.gradient_checkpointing,
            "log_every": 10,
            "prefix_cache_device_fraction": args.cache_fraction,
        },
    )
    trainer = RouterTrainer(
        model, tok, store, cfg, tempfile.mkdtemp(prefix="gpu_bench_run"), graph=graph, progress=False
    )
    acc.sync()
    acc.reset_peak()
    t0 = time.perf_counter()
    result = trainer.train()
    acc.sync()
    total = time.perf_counter() - t0
    peak = acc.peak_gib()
    # Naive arm, a few steps (its routers are the same parameters; the values do not matter for timing).
    for p in trainer.params.values():
        p.requires_grad_(True)
        p.data = p.data.float()
    opt = torch.optim.AdamW(list(trainer.params.values()), lr=7e-5)
    items = trainer.items[: args.batch_size]
    naive_step(model, trainer, items, opt)  # warm-up
    acc.sync()
    acc.reset_peak()
    t1 = time.perf_counter()
    for _ in range(args.naive_steps):
        naive_step(model, trainer, items, opt)
    acc.sync()
    naive_per_step = (time.perf_counter() - t1) / args.naive_steps
    naive_peak = acc.peak_gib()
    steps = result.steps
    cache = trainer.cache.flat if trainer.cache is not None else None
    report = {
        "device": acc.name(),
        "torch": torch.__version__,
        "params": n_params,
        "samples": args.samples,
        "seq_len": args.seq_len,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "gradient_checkpointing": args.gradient_checkpointing,
        "steps": steps,
        "prefix_cache_device": str(cache.device) if cache is not None else None,
        "prefix_cache_gib": round(cache.numel() * cache.element_size() / 2**30, 2)
        if cache is not None
        else 0.0,
        "total_seconds_incl_prefix_cache": round(total, 2),
        "samples_per_second_end_to_end": round(args.samples * args.epochs / total, 1),
        "prefix_cache_seconds": round(trainer.timings["prefix_cache_seconds"], 2),
        "train_loop_seconds": round(trainer.timings["loop_seconds"], 2),
        "ours_seconds_per_step": round(trainer.timings["loop_seconds"] / max(steps, 1), 4),
        "per_step_speedup_vs_naive": round(
            naive_per_step / (trainer.timings["loop_seconds"] / max(steps, 1)), 2
        ),
        "peak_gpu_memory_gib": peak and round(peak, 2),
        "naive_seconds_per_step": round(naive_per_step, 4),
        "naive_peak_gpu_memory_gib": naive_peak and round(naive_peak, 2),
    }
    common.emit_report(report, args.out)
    return report


if __name__ == "__main__":
    main()
