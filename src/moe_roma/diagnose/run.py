"""``diagnose_routing``: every measurement of ``moe_roma.diagnose.measures`` on one routing store.

>>> from moe_roma.routing.store import load_routing_store  # doctest: +SKIP
>>> report = diagnose_routing(load_routing_store("runs/x/routing.json"))  # doctest: +SKIP
>>> report["correctness_signal"]["auc_routing"]  # doctest: +SKIP
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from moe_roma import __version__
from moe_roma.diagnose import measures
from moe_roma.diagnose.verdict import verdict
from moe_roma.io.errors import ModelError, RomaError
from moe_roma.manifold.graph import embedding_text
from moe_roma.models.discovery import parse_layer_spec
from moe_roma.routing.store import RoutingStore

MIN_ITEMS = 20  # below this, no measurement says anything
ASSUMED_TOP_K = 2  # experts per token when neither the option, the file nor the model says


def _whole(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def resolve_top_k(
    store: RoutingStore,
    top_k: int | None = None,
    path: str | None = None,
    model_top_k: int | None = None,
    warn_if_assumed: bool = True,
) -> tuple[int, str]:
    """Experts per token for the utilisation measure, and where that number came from: ``top_k`` (the
    option) when given, else the ``top_k`` the routing file recorded at collection, else the model's
    (``model_top_k``), else 2 with a warning. Each must be a whole number from 1 to the file's experts; a
    recorded k that the model contradicts is refused (the model is not the one the routing came from).

    >>> from moe_roma.routing.store import RoutingStore  # doctest: +SKIP
    >>> resolve_top_k(store)  # a file from `roma collect` of a top-4 model  # doctest: +SKIP
    (4, 'the routing file')
    """
    name = path or "the routing file"
    experts = int(store.routing.shape[-1])
    if top_k is not None:
        if not (_whole(top_k) and 1 <= top_k <= experts):
            raise RomaError(
                f"--top-k {top_k!r}: experts per token must be a whole number from 1 to the {experts} "
                f"experts that {name} records"
            )
        return top_k, "--top-k"
    recorded = store.meta.get("top_k")
    if recorded is not None:
        if not (_whole(recorded) and 1 <= recorded <= experts):
            raise RomaError(
                f"{name}: its side-car records top_k {recorded!r}, not a whole number of experts per token "
                f"from 1 to its {experts} experts; pass --top-k K"
            )
        if model_top_k is not None and model_top_k != recorded:
            raise RomaError(
                f"{name} records top_k {recorded} (experts per token at collection), but --model routes each "
                f"token to {model_top_k} experts in layers {list(store.layers)}: is it the model the routing "
                "was collected from?"
            )
        return recorded, "the routing file"
    if model_top_k is not None:
        return model_top_k, "the model"
    k = min(ASSUMED_TOP_K, experts)
    if warn_if_assumed:
        from moe_roma.io.errors import warn

        warn(
            f"{name} records no top_k (experts per token), so utilisation assumes {k}; pass --top-k K "
            "(or --model) for the model's own"
        )
    return k, "assumed"


def only_layers(store: RoutingStore, spec: str, path: str | None = None) -> RoutingStore:
    """A copy of ``store`` with only the recorded layers ``spec`` names (``last3``, ``first2``, ``all``,
    ``11,12``: ``models.discovery.parse_layer_spec``'s syntax, counted among the recorded layers)."""
    recorded = list(store.layers)
    try:
        parsed = parse_layer_spec(spec)
    except ModelError:
        parsed = []
    if parsed == "all":
        chosen = recorded
    elif isinstance(parsed, tuple):
        side, n = parsed
        chosen = recorded[-n:] if side == "last" else recorded[:n]
    else:
        chosen = list(parsed)
    missing = [x for x in chosen if x not in recorded]
    if not chosen or missing:
        raise RomaError(
            f"{path or 'routing file'}: layers {spec!r} are not among the recorded layers {recorded}"
        )
    out = store.subset(list(range(len(store))))
    out.routing = out.routing[:, [recorded.index(x) for x in chosen]]
    out.layers = chosen
    return out


def question_embeddings(
    store: RoutingStore, embedder: str | None = None, log: Callable[[str], None] = lambda _: None
) -> np.ndarray:
    """The store's L2-normalised question embeddings: those `roma collect --embed` stored with the same
    embedder, else embedded now (default embedder: the bundled all-MiniLM-L6-v2)."""
    from moe_roma.manifold.embed import DEFAULT_EMBEDDER, embed_texts

    if store.embeddings is not None and (embedder or DEFAULT_EMBEDDER) == store.meta.get("embedder"):
        log(f"using the embeddings stored with the routing ({store.meta['embedder']})")
        return store.embeddings.numpy()
    log("embedding the questions")
    return embed_texts([embedding_text(q, t) for q, t in zip(store.questions, store.input_texts)], embedder)


def diagnose_routing(
    store: RoutingStore,
    embedder: str | None = None,
    embeddings: np.ndarray | None = None,
    top_k: int | None = None,
    k: int = 3,
    sigma: float = 0.4,
    seed: int = 0,
    log: Callable[[str], None] = lambda _: None,
    model_top_k: int | None = None,
    path: str | None = None,
) -> dict:
    """Measure a routing store: success, alignment, correctness signal, room to move, routing health, and
    the verdict (``moe_roma.diagnose.verdict``; recompute it after adding an ``oracle`` section).

    ``embeddings`` (L2-normalised, one row per item) skips embedding the questions with ``embedder``
    (default: the bundled all-MiniLM-L6-v2). ``top_k``: the model's experts per token, for utilisation
    (default: the store's recorded one, else ``model_top_k``, else 2 with a warning: ``resolve_top_k``;
    ``path`` names the file in its errors). A store of fewer than 20 items, or without
    successful or without failed items, gets the measurements that still mean something and a reason.
    """
    start = time.perf_counter()
    n = len(store)
    top_k, top_k_from = resolve_top_k(store, top_k, path, model_top_k, warn_if_assumed=False)
    out: dict = {
        "n": n,
        "layers": list(store.layers),
        "experts": int(store.routing.shape[-1]),
        "top_k": top_k,
        "top_k_from": top_k_from,
        "package_version": __version__,
        "cannot_tell": [],
    }
    out["success"] = measures.success(store.is_correct, store.tasks)
    if n < MIN_ITEMS:
        out["cannot_tell"].append(f"only {n} items; at least {MIN_ITEMS} are needed")
        out["verdict"] = verdict(out)
        return out
    n_ok = out["success"]["n_successful"]
    if n_ok == 0:
        out["cannot_tell"].append("no item is answered right: there is no successful set to align to")
    if n_ok == n:
        out["cannot_tell"].append("every item is answered right: there is nothing to correct")
    if embeddings is None:
        embeddings = question_embeddings(store, embedder, log)
    embeddings = np.asarray(embeddings, dtype=np.float32)
    if embeddings.shape[0] != n:
        raise RomaError(f"{embeddings.shape[0]} embeddings for {n} routing items")
    if top_k_from == "assumed":  # said only now, once the measures that need k are reached
        resolve_top_k(store, None, path)
    inputs = measures.MeasureInputs(store, embeddings, store.routing.float(), top_k, k, sigma, seed)
    for name, measure in measures.MEASURES.items():
        if measure.needs_both_kinds and out["cannot_tell"]:
            continue
        log(measure.progress)
        out[name] = measure.run(inputs)
    out["verdict"] = verdict(out)
    out["seconds"] = round(time.perf_counter() - start, 2)
    out["_embeddings"] = embeddings  # for the pictures; not written to JSON
    return out
