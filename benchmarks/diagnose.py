"""`roma diagnose` at scale: 50 000 items, 5 layers x 64 experts, without --oracle, on 2 CPU threads.

The goal (issue 18): the command finishes within 2 minutes on 2 CPU cores. The routing file is
synthetic and written in the seed-001 format first (not timed): 20 tasks, each with its own
question words and a preferred set of experts per layer, and correctness that depends on routing
for half of the items, so that every measurement has something to find. The command then runs
in-process, as a user would call it, and the table gives the wall time of each phase (from the
command's own log lines) and of the whole.

By default the side-car carries the question embeddings, as `roma collect --embed` writes them
where the model runs (random unit vectors here: only their count and width matter for the time).
`--cold` leaves them out, so that diagnose embeds the 50k questions itself with the bundled
all-MiniLM-L6-v2 on the CPU.

    PYTHONPATH=src python benchmarks/diagnose.py                 # 50k items, the goal
    PYTHONPATH=src python benchmarks/diagnose.py --cold          # ... embedding them on the CPU
    PYTHONPATH=src python benchmarks/diagnose.py --items 5000    # a quick look
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

try:  # run as a script (benchmarks/ on sys.path) or imported as benchmarks.diagnose
    import _common as common
except ImportError:  # pragma: no cover
    from benchmarks import _common as common

from moe_roma.routing.store import RoutingStore, save_routing_store  # noqa: E402

GOAL_SECONDS = 120.0


def synthetic_store(n: int, layers: int, experts: int, tasks: int = 20, seed: int = 0) -> RoutingStore:
    """A routing store whose routing follows the task and whose correctness depends on routing."""
    rng = np.random.default_rng(seed)
    task = rng.integers(tasks, size=n)
    words = [[f"t{t}w{j}" for j in range(30)] for t in range(tasks)]
    questions = [" ".join(rng.choice(words[t], size=8)) + "?" for t in task]
    prefs = rng.normal(size=(tasks, layers, experts)) * 2.0
    logits = prefs[task] + rng.normal(size=(n, layers, experts))
    routing = torch.softmax(torch.as_tensor(logits, dtype=torch.float32), dim=-1)
    # Right when the last layer's top expert is among the task's two preferred ones (half the signal).
    top = routing[:, -1].argmax(-1).numpy()
    preferred = np.argsort(-prefs[:, -1], axis=1)[:, :2]
    correct = np.where(rng.random(n) < 0.5, (preferred[task] == top[:, None]).any(1), rng.random(n) < 0.6)
    answers = rng.integers(4, size=n)
    model_answer = np.where(correct, answers, (answers + 1) % 4)
    return RoutingStore(
        ids=[f"q{i}" for i in range(n)],
        input_texts=[f"Question: {q}\nAnswer:" for q in questions],
        layers=list(range(32 - layers, 32)),
        routing=routing,
        answer_index=answers.tolist(),
        model_answer=model_answer.tolist(),
        is_correct=correct.tolist(),
        token_ids=[0] * n,
        token_texts=[":"] * n,
        questions=questions,
        choices=[("a", "b", "c", "d")] * n,
        tasks=[f"task{t}" for t in task],
        meta={"scoring": "continuation", "top_k": 8},
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--items", type=int, default=50_000)
    ap.add_argument("--layers", type=int, default=5)
    ap.add_argument("--experts", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--cold", action="store_true", help="no stored embeddings: diagnose embeds the questions")
    args = ap.parse_args()
    common.setup(args.threads)
    from moe_roma.cli import main as roma

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "routing.json"
        store = synthetic_store(args.items, args.layers, args.experts)
        if not args.cold:
            emb = torch.randn(args.items, 384, generator=torch.Generator().manual_seed(1))
            store.embeddings = emb / emb.norm(dim=1, keepdim=True)
            store.meta["embedder"] = "all-MiniLM-L6-v2"
        save_routing_store(store, path)
        phases: list[tuple[str, float]] = []
        import builtins

        real_print = builtins.print

        def timed_print(*a, **k):  # the command's phase lines, time-stamped
            phases.append((" ".join(map(str, a)), time.perf_counter()))
            real_print(*a, **k)

        builtins.print = timed_print
        start = time.perf_counter()
        try:
            code = roma(["diagnose", "--routing", str(path), "--out", str(Path(tmp) / "out"), "--top-k", "8"])
        finally:
            builtins.print = real_print
        total = time.perf_counter() - start
    marks = [("load", start)] + phases
    how = "embedding the questions itself" if args.cold else "embeddings stored by collect --embed"
    print(
        f"\n{args.items} items, {args.layers} layers x {args.experts} experts, {how}, {args.threads} threads "
        f"({common.machine()})"
    )
    print("| phase | seconds |\n|---|---|")
    for (name, t0), (_, t1) in zip(marks, marks[1:]):
        print(f"| {name[:60]} | {t1 - t0:.1f} |")
    print(f"| **total** | **{total:.1f}** |")
    print(
        f"goal: {GOAL_SECONDS:.0f} s -> {'met' if total <= GOAL_SECONDS else 'NOT met'}; exit status {code}"
    )
    return 0 if code == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
