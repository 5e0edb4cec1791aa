"""One RoMA training step: our trainer against the public code's naive step (CPU, random weights).

OURS runs what ``RouterTrainer.train`` runs per step, by calling the trainer's own pieces on a
batch whose prefix states were cached beforehand (``PrefixCache.fill``, as ``train`` does once):
``forward_items`` (frozen layers replayed, only the tuned layers run, logits at the last position
only), ``regularizer_terms`` (the live manifold term), backward, the finiteness check, gradient
norm and clipping, the AdamW step and the per-step metrics (``log_every=1`` is the default).

NAIVE is what the public code does per step, written here: a full forward over every layer with
full-vocabulary logits at every position and no prefix cache, letter cross-entropy at the last
position, plus a manifold term computed from the stored routing (a constant: no gradient), then
backward and the same AdamW step. It skips clipping and metrics, which only flatters it.

Both arms use the same OLMoE-shaped model (64 experts, top-8; width, vocabulary and depth below),
the same batches and the same trainable routers (the last 5 layers), and are timed in one
process, interleaved, with the median of several repeats reported. Peak memory of a step is the
peak of live torch-tensor bytes above the level before the step, read from the allocation events
of torch's profiler on one extra step per arm (the CPU counterpart of CUDA's
``max_memory_allocated``; resident-set readings were tried and are blurred by glibc reusing freed
heap blocks). The prefix cache, filled once per run, is listed apart.

    PYTHONPATH=src python benchmarks/train_step.py            # 16 and 48 layers, < 2 min on 2 cores
    PYTHONPATH=src python benchmarks/train_step.py --quick    # smoke settings

The last line is ``speedup: X.XXx`` for the first shape (16 layers by default).

Shape: width 128, experts' intermediate 64 (OLMoE's ratio), 4 heads, vocabulary 8192, batch 32
(the paper's), letter prompts of ~39 tokens. At this width a vocabulary of 8192 makes the
full-vocabulary head cost about two decoder layers of time, close to OLMoE-1B-7B, whose head is
~1.5 layers of FLOPs (2048 x 50304 = 103M multiply-adds per token against ~68M per decoder layer);
a real 50k vocabulary at width 128 would cost ~24 layers and flatter us. Prompts are shorter than
real ones to keep the run short; at these lengths attention is a small part of a layer, so the
ratio hardly depends on it.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

try:  # run as a script (benchmarks/ on sys.path) or imported as benchmarks.train_step
    import _common as common
except ImportError:  # pragma: no cover
    from benchmarks import _common as common

from moe_roma.data.prompts import letter_prompt  # noqa: E402
from moe_roma.manifold.graph import NeighbourSearch, build_neighbour_graph  # noqa: E402
from moe_roma.methods.common import losses  # noqa: E402
from moe_roma.methods.common.batches import TrainItem, make_batch  # noqa: E402
from moe_roma.methods.common.prefix import PrefixCache  # noqa: E402
from moe_roma.methods.roma.config import train_config  # noqa: E402
from moe_roma.methods.roma.trainer import RouterTrainer  # noqa: E402
from moe_roma.routing.store import RoutingStore  # noqa: E402

TUNED = 5  # RoMA tunes the routers of the last 5 layers
LAM = 0.8


@dataclass
class Shape:
    layers: int
    hidden: int
    vocab: int
    batch: int
    words: tuple[int, int]  # question length in words; prompts add ~25 tokens of template and choices


@dataclass
class Setup:
    shape: Shape
    trainer: RouterTrainer
    batches: list[list[TrainItem]]
    opt_ours: torch.optim.Optimizer
    opt_naive: torch.optim.Optimizer
    scaler: torch.amp.GradScaler  # disabled on CPU, as in the trainer
    tokens_per_step: float
    cache_mib: float


def synthetic_store(n: int, shape: Shape, layers: list[int], experts: int, seed: int) -> RoutingStore:
    """Letter prompts of random words; routing drawn from a Dirichlet; about 60% marked correct."""
    examples = common.synthetic_examples(n, shape.vocab, shape.words, (1, 4), seed=seed)
    gen = torch.Generator().manual_seed(seed)
    routing = torch.distributions.Dirichlet(torch.full((experts,), 0.3)).sample((n, len(layers)))
    correct = (torch.rand(n, generator=gen) < 0.6).tolist()
    answers = [ex.answer for ex in examples]
    return RoutingStore(
        ids=[ex.id for ex in examples],
        input_texts=[letter_prompt(ex) for ex in examples],
        layers=layers,
        routing=routing,
        answer_index=answers,
        model_answer=answers,
        is_correct=correct,
        token_ids=[0] * n,
        token_texts=[":"] * n,
        questions=[ex.question for ex in examples],
        choices=[ex.choices for ex in examples],
    )


def build(shape: Shape, n_batches: int, seed: int = 0) -> Setup:
    model = common.olmoe(shape.layers, shape.hidden, shape.vocab, seed=seed)
    tok = common.word_tokenizer(shape.vocab)
    layers = list(range(shape.layers - TUNED, shape.layers))
    n = shape.batch * n_batches
    store = synthetic_store(n, shape, layers, model.config.num_experts, seed)
    emb = F.normalize(torch.randn(n, 384, generator=torch.Generator().manual_seed(seed + 1)), dim=1)
    graph = build_neighbour_graph(emb.numpy(), store.successful, NeighbourSearch(k=3))
    cfg = train_config(layers=f"last{TUNED}", max_length=1024, schedule={"batch_size": shape.batch})
    # The trainer writes nothing before train(); train_loop_ms points it at a temporary folder.
    trainer = RouterTrainer(
        model, tok, store, cfg, Path(tempfile.gettempdir()) / "unused", graph=graph, progress=False
    )
    # What train() does once before its loop: cache the states entering the first tuned layer.
    trainer.cache = PrefixCache(trainer.first_layer)
    trainer.cache.fill(model, trainer.info, trainer.items, trainer.pad, cfg.schedule.batch_size, False)
    params = list(trainer.params.values())
    batches = [trainer.items[i : i + shape.batch] for i in range(0, n, shape.batch)]
    tokens = sum(len(it.seqs[0]) for it in trainer.items) / len(batches)
    cache_mib = trainer.cache.flat.numel() * trainer.cache.flat.element_size() / 2**20
    return Setup(
        shape,
        trainer,
        batches,
        cfg.optimizer.build(params),
        cfg.optimizer.build(params),
        torch.amp.GradScaler("cpu", enabled=False),
        tokens,
        cache_mib,
    )


class _Clock:
    """Accumulates the wall time of named phases of a step."""

    def __init__(self, sink: dict[str, list[float]] | None) -> None:
        self.sink, self.last = sink, time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        if self.sink is not None:
            self.sink.setdefault(name, []).append(now - self.last)
        self.last = now


def ours_step(s: Setup, items: list[TrainItem], phases: dict[str, list[float]] | None = None) -> float:
    """The body of ``RouterTrainer.train``'s loop (no distributed run, no grad scaler on CPU)."""
    t = s.trainer
    params = list(t.params.values())
    clock = _Clock(phases)
    s.opt_ours.zero_grad(set_to_none=True)
    out = t.forward_items(items)
    clock.lap("ours forward_items")
    terms = t.regularizer_terms(items, out["routing"])
    loss = (out["task"] + LAM * terms["reg"]).sum() / len(items)
    clock.lap("ours regularizer")
    loss.backward()
    clock.lap("ours backward")
    loss_value, _ = t.apply_step(params, loss, s.opt_ours, s.scaler)
    clock.lap("ours optimizer (+checks, clip)")
    t._step_figures(out, terms, items)
    clock.lap("ours step metrics")
    return loss_value


def naive_step(s: Setup, items: list[TrainItem], phases: dict[str, list[float]] | None = None) -> float:
    """The public code's step: every layer, each position's full-vocabulary logits, constant manifold term."""
    t = s.trainer
    clock = _Clock(phases)
    s.opt_naive.zero_grad(set_to_none=True)
    batch = make_batch(items, t.pad)
    out = t.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, use_cache=False)
    clock.lap("naive forward (all layers, all logits)")
    letters = out.logits[:, -1, t.letter_ids[:4]].float()
    answers = torch.tensor([it.answer for it in items])
    idx = [it.index for it in items]
    # Read from the stored routing of sample i and its neighbours: no path to the routers.
    stored = t.store.routing[idx][:, t.store_cols].flatten(1)
    nb = t.graph.indices[idx]
    targets = t.store.routing[nb.clamp_min(0)][:, :, t.store_cols].flatten(2)
    manifold = losses.manifold_loss(stored, targets, t.graph.weights[idx]).mean()
    loss = F.cross_entropy(letters, answers) + LAM * manifold
    loss.backward()
    loss_value = float(loss.detach())
    clock.lap("naive backward")
    s.opt_naive.step()
    clock.lap("naive optimizer")
    return loss_value


def run_shape(shape: Shape, repeats: int) -> dict:
    t0 = time.perf_counter()
    s = build(shape, n_batches=2)
    build_s = time.perf_counter() - t0
    phases: dict[str, list[float]] = {}
    counter = {"ours": 0, "naive": 0}

    def arm(name: str, fn):
        def run() -> None:
            items = s.batches[counter[name] % len(s.batches)]  # both arms see the batches in the same order
            counter[name] += 1
            fn(s, items, phases if counter[name] > 1 else None)  # the warm-up step is not a phase sample

        return run

    times = common.interleaved({"ours": arm("ours", ours_step), "naive": arm("naive", naive_step)}, repeats)
    loop_ms = train_loop_ms(s)
    return {
        "shape": shape,
        "setup": s,
        "times": times,
        "phases": phases,
        "build_s": build_s,
        "loop_ms": loop_ms,
    }


def train_loop_ms(s: Setup, epochs: int = 2) -> float:
    """Milliseconds per step of the real ``RouterTrainer.train`` loop on the same items (its own
    prefix-cache fill excluded, as the trainer times it): a check that ``ours_step`` mirrors it."""
    t = s.trainer
    t.config.schedule.epochs = epochs
    with tempfile.TemporaryDirectory(prefix="roma_bench_") as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # collapse warnings of random routers are expected here
        t.out_dir = Path(tmp)
        result = t.train()
    return 1000 * t.timings["loop_seconds"] / result.steps


def measure_memory(results: Sequence[dict]) -> None:
    """Peak live torch-tensor bytes of one step of each arm (after the timings: the profiler slows it)."""
    for r in results:
        s = r["setup"]
        r["mem"] = {
            "ours": common.torch_peak_mib(lambda s=s: ours_step(s, s.batches[0])),
            "naive": common.torch_peak_mib(lambda s=s: naive_step(s, s.batches[0])),
        }


def report(results: Sequence[dict], repeats: int) -> float:
    print(common.machine())
    print(
        "model: OLMoE-shaped, random fp32 weights, 64 experts top-8, intermediate = hidden/2, 4 heads; "
        f"routers of the last {TUNED} layers trained; letter loss + manifold term (k=3), AdamW"
    )
    rows = []
    for r in results:
        sh, s, t = r["shape"], r["setup"], r["times"]
        ours, naive = common.median(t["ours"]), common.median(t["naive"])
        rows.append(
            [
                f"{sh.layers} layers",
                f"h{sh.hidden} v{sh.vocab}",
                f"{sh.batch}x{s.tokens_per_step / sh.batch:.0f}",
                f"{ours * 1000:.0f}",
                common.spread([x * 1000 for x in t["ours"]]),
                f"{r['loop_ms']:.0f}",
                f"{naive * 1000:.0f}",
                common.spread([x * 1000 for x in t["naive"]]),
                f"{naive / ours:.2f}x",
                f"{r['mem']['ours']:.0f}",
                f"{r['mem']['naive']:.0f}",
                f"{s.cache_mib:.1f}",
            ]
        )
    print()
    print(
        f"step time, median of {repeats} interleaved repeats (ms); train() = the trainer's own loop on the "
        "same items (ms/step, run after, not interleaved: checks that 'ours' mirrors it); peak = live torch "
        "tensors during a step above its start (MiB)"
    )
    print(
        common.table(
            [
                "shape",
                "width/vocab",
                "batch x tokens",
                "ours ms",
                "ours range",
                "train() ms",
                "naive ms",
                "naive range",
                "speedup",
                "ours peak MiB",
                "naive peak MiB",
                "prefix cache MiB",
            ],
            rows,
        )
    )
    for r in results:
        sh = r["shape"]
        print()
        print(f"phases, {sh.layers} layers (median ms over the timed steps; they add up to the step):")
        print(
            common.table(
                ["phase", "ms"], [[k, f"{common.median(v) * 1000:.1f}"] for k, v in r["phases"].items()]
            )
        )
    speedups = [common.median(r["times"]["naive"]) / common.median(r["times"]["ours"]) for r in results]
    print()
    for r, x in zip(results, speedups):
        print(f"speedup at {r['shape'].layers} layers: {x:.2f}x")
    print(f"speedup: {speedups[0]:.2f}x")
    return speedups[0]


def main(argv: Sequence[str] | None = None) -> float:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--layers", default="16,48", help="depths to run, comma-separated (the first gives the last line)"
    )
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--vocab", type=int, default=8192)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--words", default="8,24", help="question length range in words")
    ap.add_argument("--repeats", type=int, default=4)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="tiny settings for the smoke test")
    args = ap.parse_args(argv)
    if args.quick:
        args.layers, args.hidden, args.vocab, args.batch, args.words, args.repeats = (
            "8,10",
            32,
            512,
            4,
            "4,8",
            2,
        )
    common.setup(args.threads)
    lo, hi = (int(x) for x in args.words.split(","))
    shapes = [Shape(int(n), args.hidden, args.vocab, args.batch, (lo, hi)) for n in args.layers.split(",")]
    results = [run_shape(sh, args.repeats) for sh in shapes]
    measure_memory(results)
    return report(results, args.repeats)


if __name__ == "__main__":
    main()
