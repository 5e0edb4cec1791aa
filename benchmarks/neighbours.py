"""Exact top-k neighbour search over a large successful set: time and peak memory per search.

``moe_roma.manifold.graph.build_neighbour_graph`` searches the k=3 nearest of ``--keys`` unit
vectors of dim 384 for ``--queries`` query vectors. The torch path goes chunk by chunk, so that
memory grows with ``chunk x |S|``, not ``queries x |S|``: one block of float32 similarities and
its bool duplicate mask (5 bytes per similarity) is alive at a time, and no copy of the keys is
made when every sample is a key, as here. The FAISS path (run when faiss is installed) builds a
flat inner-product index, which holds its own copy of the keys. For each arm, interleaved over
repeats, the table gives the median time and the peak resident memory above the level before the
call, next to what the code should hold. Exactness is checked against an independent float64 brute
force (numpy, key blocks) on a subsample of the queries, and every arm must return the same graph.

A tenth of the queries are near-copies of a key (cosine > 0.95, dropped as duplicates by the
search) and a tenth are close to a key (about 0.86), so those paths are exercised too.

    PYTHONPATH=src python benchmarks/neighbours.py                  # 1M keys, 100 queries, < 2 min
    PYTHONPATH=src python benchmarks/neighbours.py --queries 2000   # a few minutes on 2 cores
    PYTHONPATH=src python benchmarks/neighbours.py --quick
"""

from __future__ import annotations

import argparse
import contextlib
import time
from collections.abc import Sequence

import numpy as np
import torch

try:  # run as a script (benchmarks/ on sys.path) or imported as benchmarks.neighbours
    import _common as common
except ImportError:  # pragma: no cover
    from benchmarks import _common as common

from moe_roma.manifold.graph import NeighbourGraph, NeighbourSearch, build_neighbour_graph  # noqa: E402

DIM = 384  # all-MiniLM-L6-v2, the default embedder


def unit_rows(n: int, dim: int, gen: torch.Generator, block: int = 1 << 17) -> torch.Tensor:
    """``n`` random unit vectors, normalised block by block (no second full-size copy)."""
    out = torch.empty(n, dim)
    for s in range(0, n, block):
        x = out[s : s + block]
        x.normal_(generator=gen)
        x.div_(x.norm(dim=1, keepdim=True))
    return out


def make_queries(keys: torch.Tensor, m: int, gen: torch.Generator) -> torch.Tensor:
    q = unit_rows(m, keys.shape[1], gen)
    tenth = m // 10
    picks = torch.randint(0, keys.shape[0], (2 * tenth,), generator=gen)
    noise = torch.randn(2 * tenth, keys.shape[1], generator=gen)
    q[:tenth] = keys[picks[:tenth]] + 0.01 * noise[:tenth]  # cosine ~0.98: a duplicate, excluded
    q[tenth : 2 * tenth] = keys[picks[tenth:]] + 0.03 * noise[tenth:]  # cosine ~0.86: a true neighbour
    return q / q.norm(dim=1, keepdim=True)


def brute_force(
    keys: torch.Tensor, queries: torch.Tensor, k: int, dedupe: float, block: int = 1 << 17
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k (similarity, index) per query in float64 numpy, over key blocks, with the same duplicate rule."""
    q = queries.numpy().astype(np.float64)
    best_s = np.full((q.shape[0], 0), -np.inf)
    best_i = np.zeros((q.shape[0], 0), dtype=np.int64)
    for s in range(0, keys.shape[0], block):
        sims = q @ keys[s : s + block].numpy().astype(np.float64).T
        sims[sims > dedupe] = -np.inf
        part = np.argpartition(-sims, min(k, sims.shape[1] - 1), axis=1)[:, :k]
        best_s = np.concatenate([best_s, np.take_along_axis(sims, part, 1)], axis=1)
        best_i = np.concatenate([best_i, part + s], axis=1)
        order = np.argsort(-best_s, axis=1, kind="stable")[:, :k]
        best_s, best_i = np.take_along_axis(best_s, order, 1), np.take_along_axis(best_i, order, 1)
    return best_s, best_i


def check_exact(
    graph: NeighbourGraph, ref_s: np.ndarray, ref_i: np.ndarray, rows: np.ndarray
) -> tuple[int, float]:
    """Rows whose neighbour sets differ (a near-tie within 1e-5 at the k-th place may swap), and the
    largest similarity difference."""
    got_i = graph.indices[rows].numpy()
    got_s = graph.similarities[rows].numpy().astype(np.float64)
    bad = 0
    for r in range(len(rows)):
        if set(got_i[r].tolist()) != set(ref_i[r].tolist()) and not np.allclose(
            np.sort(got_s[r]), np.sort(ref_s[r]), atol=1e-5
        ):
            bad += 1
    return bad, float(np.abs(np.sort(got_s, 1) - np.sort(ref_s, 1)).max())


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--keys", type=int, default=1_000_000, help="size of the successful set |S|")
    ap.add_argument("--queries", type=int, default=100)
    ap.add_argument("--chunks", default="10,50,100", help="chunk sizes (queries per block), comma-separated")
    ap.add_argument("--check", type=int, default=20, help="queries checked against the float64 brute force")
    ap.add_argument("--k", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-faiss", dest="faiss", action="store_false", help="time the torch path only")
    ap.add_argument("--quick", action="store_true", help="tiny settings for the smoke test")
    args = ap.parse_args(argv)
    if args.quick:
        args.keys, args.queries, args.chunks, args.check, args.repeats = 20_000, 40, "10,40", 10, 1
    common.setup(args.threads)
    if faiss_available():
        import faiss

        faiss.omp_set_num_threads(args.threads)  # the same core budget as torch's arm
    with common.pinned_mmap_threshold() as pinned:
        return run(args, memory_ok=pinned and common.peak_rss_supported())


def faiss_available() -> bool:
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True


def run(args: argparse.Namespace, memory_ok: bool) -> int:
    gen = torch.Generator().manual_seed(0)
    t0 = time.perf_counter()
    keys = unit_rows(args.keys, DIM, gen)
    queries = make_queries(keys, args.queries, gen)
    successful = list(range(args.keys))
    gen_s = time.perf_counter() - t0
    config = NeighbourSearch(k=args.k)
    # Arm name -> (backend, chunk size).
    arms_spec = {f"torch, chunk {c}": ("torch", int(c)) for c in args.chunks.split(",")}
    if args.faiss and faiss_available():
        arms_spec["faiss (flat index)"] = ("faiss", None)
    graphs: dict[str, NeighbourGraph] = {}
    peaks: dict[str, list[float]] = {name: [] for name in arms_spec}

    def arm(name: str):
        backend, chunk = arms_spec[name]

        def run() -> None:
            with common.PeakRSS() if memory_ok else contextlib.nullcontext() as m:
                graphs[name] = build_neighbour_graph(
                    keys, successful, config, queries=queries, chunk_size=chunk, backend=backend
                )
            if m is not None:
                peaks[name].append(m.mib)

        return run

    times = common.interleaved({name: arm(name) for name in arms_spec}, args.repeats, warmup=0)
    rows = np.linspace(0, args.queries - 1, min(args.check, args.queries)).astype(int)
    t1 = time.perf_counter()
    ref_s, ref_i = brute_force(keys, queries[rows], args.k, config.dedupe_threshold)
    check_s = time.perf_counter() - t1
    first = next(iter(graphs.values()))
    same = all(torch.equal(g.indices, first.indices) for g in graphs.values())
    checks = {name: check_exact(g, ref_s, ref_i, rows) for name, g in graphs.items()}
    dup_excluded = int((first.similarities[: args.queries // 10] > config.dedupe_threshold).sum())

    keys_mib = keys.numel() * 4 / 2**20
    print(common.machine())
    print(
        f"|S| = {args.keys:,} unit vectors of dim {DIM} ({keys_mib:.0f} MiB), {args.queries} queries, k = "
        f"{args.k}; data made in {gen_s:.1f} s"
    )
    table_rows = []
    for name, (backend, chunk) in arms_spec.items():
        med = common.median(times[name])
        # torch: one block of float32 similarities + its bool mask; FAISS: the index's copy of the keys.
        expected = chunk * args.keys * 5 / 2**20 if backend == "torch" else keys_mib
        peak = f"{max(peaks[name]):.0f}" if peaks[name] else "n/a"
        bad, max_diff = checks[name]
        table_rows.append(
            [
                name,
                f"{med:.2f}",
                common.spread(times[name]),
                f"{args.queries / med:.0f}",
                f"{1000 * med / args.queries:.1f}",
                peak,
                f"{expected:.0f}",
                f"{len(rows) - bad}/{len(rows)}",
                f"{max_diff:.1e}",
            ]
        )
    print()
    print(f"median of {args.repeats} interleaved repeats; peak = RSS rise during the call (MiB)")
    print(
        common.table(
            [
                "search",
                "seconds",
                "range",
                "queries/s",
                "ms/query",
                "peak MiB",
                "expected MiB",
                "exact sets",
                "max |sim diff|",
            ],
            table_rows,
        )
    )
    print()
    print(
        f"exactness: {len(rows)} queries against a float64 brute force ({check_s:.1f} s); "
        f"all arms identical: {same}; near-duplicate neighbours returned: {dup_excluded}"
    )
    return sum(bad for bad, _ in checks.values()) + (0 if same else 1) + dup_excluded


if __name__ == "__main__":
    raise SystemExit(main())
