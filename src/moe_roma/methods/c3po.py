"""C3PO baseline: test-time re-mixing of an item's last-token routing from its successful neighbours.

For each evaluation item i, ``N(i)`` = its k nearest SUCCESSFUL reference samples in embedding space
(``build_neighbour_graph(..., queries=eval_embeddings)``; reference samples with cosine similarity
> 0.95 to the item are dropped as near-duplicates), with kernel weights ``W_ij = K_ij / sum_j K_ij``,
``K = exp(-(1 - cos)^2 / 2 sigma^2)``. Only the routing at the item's last prompt token in the tuned
layers changes; everything else is the base model.

``mode="kernel"`` (kernel regression). Per tuned layer ``w_i <- a w_i + (1 - a) sum_j W_ij w_j``
(``w`` = routing weights, a distribution over all experts; a = 0 is C3PO's kernel mean / "mode
finding"). ``a`` is chosen per item from ``alphas`` by the neighbours' own loss: every neighbour j
gets the same rule with ITS neighbours among the successful reference samples (itself and its
near-duplicates excluded), ``w_j(a) = a w_j + (1 - a) sum_m W_jm w_m``, is run with that routing and
scored against its true label; the item takes ``argmin_a sum_j W_ij loss_j(a)`` (ties go to the
larger a, i.e. the smaller change). ``loss_j(a)`` does not depend on i, so it is computed once per
(neighbour, a) and shared between items (the passes count what was actually run). With a single
alpha no selection pass is run. Items whose chosen a is 1, or that have no neighbour, keep the
base prediction without another pass.

``mode="ngd"`` (neighbourhood gradient descent), two readings, picked by ``ngd_variable``:

- ``"replace"`` (default; C3PO's own formulation): the variable is the item's routing
  ``omega = softmax(theta)`` per layer, initialised to its base routing ``w_i``. The objective is
  ``sum_j W_ij loss_j`` where neighbour j is run with ITS last-token routing replaced by ``omega``
  (the same substitution that is then made for the item); ``omega`` is applied to the item.
- ``"offset"``: the variable is a shared vector of router-logit offsets ``delta`` per layer,
  initialised to 0, added to each neighbour's own last-token logits; ``delta`` is then added to
  the item's logits.

Both take ``ngd_steps`` (10) Adam steps with cosine learning-rate decay from ``ngd_lr`` to 0.

A target routing is applied EXACTLY with ``RoutingTargets``: at each tuned layer a pre-hook
computes the router's current logits at the token (the family's own router code), turns the target
into logit offsets with ``target_logit_offsets`` and shifts the router input as ``RoutingOverride``
does, so the family's softmax/sigmoid and top-k then produce precisely the target distribution,
even though earlier re-mixed layers have changed this layer's input.

Cost: passes are counted per item (``PassCount``): the base pass (one per item), the selection or
NGD passes over neighbours (forwards and backwards), and the final pass of each changed item.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from moe_roma.io.config import Config
from moe_roma.io.errors import RomaError
from moe_roma.manifold.graph import NeighbourGraph, NeighbourSearch, build_neighbour_graph
from moe_roma.methods.base import MethodSpec, TestTimeInputs, TestTimeOutcome, register
from moe_roma.methods.common.batches import TrainItem, letter_ids_tensor
from moe_roma.methods.common.forward import items_forward
from moe_roma.methods.common.items import (
    ItemSet,
    PassCount,
    fill_cache,
    frozen_eval,
    prepare_items,
    resolve_layers,
    resolve_task_loss,
    suffix_fraction,
)
from moe_roma.methods.common.prefix import PrefixCache
from moe_roma.models.discovery import MoEInfo, discover_routers
from moe_roma.routing.store import RoutingStore

MODES = ("kernel", "ngd")
NGD_VARIABLES = ("replace", "offset")
DEFAULT_ALPHAS = (0.0, 0.25, 0.5, 0.75, 1.0)


def forward_with_targets(
    model: PreTrainedModel,
    info: MoEInfo,
    layers: list[int],
    data: ItemSet,
    items: list[TrainItem],
    targets: torch.Tensor,
    cache: PrefixCache | None = None,
) -> dict[str, torch.Tensor]:
    """``items_forward`` with item b's last-prompt-token routing set to ``targets[b]`` (B, L, E)."""
    per_layer = {layer: targets[:, li] for li, layer in enumerate(layers)}
    return items_forward(
        model, info, layers, items, data.pad, data.task_loss, data.letter_ids, cache=cache, targets=per_layer
    )


@dataclass
class C3POResult:
    """Per-item outcome of C3PO, in the evaluation store's order."""

    ids: list[str]
    mode: str
    answers: list[int]
    predictions_base: list[int]
    predictions: list[int]
    alphas: list[float]  # chosen a per item (kernel); nan for ngd
    changed: list[bool]  # routing re-mixed (False: no neighbour, or a = 1)
    neighbours: torch.Tensor  # (N, K) indices into the reference store, -1 = none
    neighbour_weights: torch.Tensor  # (N, K) normalised kernel weights W_ij
    routing_base: torch.Tensor  # (N, L, E) base last-token routing
    routing: torch.Tensor  # (N, L, E) routing applied in the final pass (captured), base where unchanged
    layers: list[int]
    passes: PassCount
    seconds: float
    settings: dict
    ngd_solution: torch.Tensor | None = None  # (N, L, E) NGD's final omega (replace) or delta (offset)

    @property
    def correct_base(self) -> list[bool]:
        return [p == a for p, a in zip(self.predictions_base, self.answers)]

    @property
    def correct(self) -> list[bool]:
        return [p == a for p, a in zip(self.predictions, self.answers)]

    @property
    def accuracy(self) -> float:
        return sum(self.correct) / max(len(self.ids), 1)

    @property
    def base_accuracy(self) -> float:
        return sum(self.correct_base) / max(len(self.ids), 1)

    def line(self) -> str:
        p = self.passes
        return (
            f"C3PO {self.mode} (k={self.settings['k']}, layers {self.layers}): base {self.base_accuracy:.1%} "
            f"-> {self.accuracy:.1%} ({sum(self.changed)} of {len(self.ids)} items re-mixed); "
            f"{p.forwards / max(p.n_items, 1):.2f} forwards and {p.backwards / max(p.n_items, 1):.2f} "
            f"backwards per item, {p.cost_vs_base:.2f}x the base model's compute; {self.seconds:.1f} s"
        )

    def to_dict(self) -> dict:
        return {
            "mode": self.mode,
            "accuracy": self.accuracy,
            "base_accuracy": self.base_accuracy,
            "n": len(self.ids),
            "n_changed": sum(self.changed),
            "layers": self.layers,
            "passes": self.passes.to_dict(),
            "settings": self.settings,
            "seconds": self.seconds,
            "items": [
                {
                    "id": i,
                    "answer": a,
                    "base": pb,
                    "prediction": p,
                    "alpha": None if math.isnan(al) else al,
                    "changed": c,
                }
                for i, a, pb, p, al, c in zip(
                    self.ids, self.answers, self.predictions_base, self.predictions, self.alphas, self.changed
                )
            ],
        }


def _mix(
    own: torch.Tensor, graph: NeighbourGraph, rows: torch.Tensor, ref_routing: torch.Tensor
) -> torch.Tensor:
    """Kernel mean ``sum_j W_ij w_j`` (B, L, E) of ``rows``' neighbours; ``own`` where there are none."""
    idx = graph.indices[rows]
    w = graph.weights[rows].to(ref_routing.dtype)
    mean = (w[:, :, None, None] * ref_routing[idx.clamp_min(0)]).sum(1)
    has = (idx >= 0).any(1)
    return torch.where(has[:, None, None], mean, own)


def c3po(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    ref_store: RoutingStore,
    ref_embeddings: np.ndarray | torch.Tensor,
    eval_store: RoutingStore,
    eval_embeddings: np.ndarray | torch.Tensor,
    layers: str | Sequence[int] | None = None,
    k: int = 3,
    sigma: float = 0.4,
    mode: str = "kernel",
    task_loss: str | None = None,
    alphas: Sequence[float] = DEFAULT_ALPHAS,
    ngd_steps: int = 10,
    ngd_lr: float = 0.1,
    ngd_variable: str = "replace",
    dedupe_threshold: float = 0.95,
    batch_size: int = 16,
    max_length: int | None = None,
    prefix_cache: bool = False,
    progress: bool = True,
    info: MoEInfo | None = None,
) -> C3POResult:
    """Re-mix each evaluation item's last-token routing from its successful reference neighbours.

    ``ref_store`` / ``eval_store``: routing stores from ``collect_routing`` with the same answer
    scoring (the reference store's ``is_correct`` defines the successful set); ``*_embeddings``:
    L2-normalised sentence embeddings in each store's order (``embed_texts``). ``layers``: tuned
    layers (default: the evaluation store's; both stores must record them). ``prefix_cache``
    replays the frozen layers before the first tuned layer for the neighbours' passes (exact;
    counted in ``passes`` at its true cost).

    >>> res = c3po(model, tok, train_store, train_emb, eval_store, eval_emb, mode="kernel")  # doctest: +SKIP
    >>> res.line()  # doctest: +SKIP
    """
    alphas = _checked_alphas(mode, ngd_variable, alphas)
    search = NeighbourSearch(k=k, sigma=sigma, dedupe_threshold=dedupe_threshold)
    run = _setup(model, tokenizer, (ref_store, ref_embeddings), (eval_store, eval_embeddings), search, info)
    run.prepare(tokenizer, layers, task_loss, max_length, batch_size, prefix_cache, progress)
    with frozen_eval(model):
        base_pred, base_routing = _base_pass(run)
        if mode == "kernel":
            remix = _kernel_remix(run, base_routing, alphas)
        else:
            remix = _ngd_remix(run, base_routing, ngd_steps, ngd_lr, ngd_variable)
        predictions, routing = _final_pass(run, base_pred, base_routing, remix)
    settings = {
        "k": k,
        "sigma": sigma,
        "dedupe_threshold": dedupe_threshold,
        "task_loss": run.task_loss,
        "alphas": alphas if mode == "kernel" else None,
        "ngd_steps": ngd_steps if mode == "ngd" else None,
        "ngd_lr": ngd_lr if mode == "ngd" else None,
        "ngd_variable": ngd_variable if mode == "ngd" else None,
        "prefix_cache": prefix_cache,
    }
    mode_name = mode if mode == "kernel" else f"ngd-{ngd_variable}"
    outcome = (base_pred, base_routing, remix, predictions, routing)
    return _result(run, mode_name, outcome, settings)


def _result(run: _Run, mode: str, outcome: tuple, settings: dict) -> C3POResult:
    """The result of the passes ``outcome`` (base answers and routing, the re-mix, final answers and
    routing), in the evaluation store's order."""
    base_pred, base_routing, remix, predictions, routing = outcome
    return C3POResult(
        ids=list(run.evals.store.ids),
        mode=mode,
        answers=[it.answer for it in run.evals.items],
        predictions_base=base_pred.tolist(),
        predictions=predictions.tolist(),
        alphas=remix.chosen.tolist(),
        changed=remix.changed.tolist(),
        neighbours=run.graph.indices,
        neighbour_weights=run.graph.weights,
        routing_base=base_routing,
        routing=routing,
        layers=run.tuned,
        passes=run.counts,
        seconds=time.perf_counter() - run.start,
        settings=settings,
        ngd_solution=remix.solution,
    )


def _checked_alphas(mode: str, ngd_variable: str, alphas: Sequence[float]) -> list[float]:
    """The mode and variable checked, and the alphas as distinct numbers in [0, 1], descending."""
    if mode not in MODES:
        raise RomaError(f"mode must be one of {MODES}, got {mode!r}")
    if ngd_variable not in NGD_VARIABLES:
        raise RomaError(f"ngd_variable must be one of {NGD_VARIABLES}, got {ngd_variable!r}")
    alphas = sorted({float(a) for a in alphas}, reverse=True)  # descending: argmin ties go to the larger a
    if not alphas or any(not 0.0 <= a <= 1.0 for a in alphas):
        raise RomaError(f"alphas must be a non-empty list of numbers in [0, 1], got {alphas}")
    return alphas


@dataclass
class _Remix:
    """Each evaluation item's new routing, before the final pass applies it."""

    chosen: torch.Tensor  # (N,) the a chosen per item (kernel); nan for NGD
    changed: torch.Tensor  # (N,) bool: the item's routing changes
    targets: torch.Tensor  # (N, L, E) the routing to set
    offsets: torch.Tensor | None  # (N, L, E) logit offsets to apply instead (NGD ``offset``)
    solution: torch.Tensor | None  # NGD's final omega (replace) or delta (offset)


def _kernel_remix(run: _Run, base_routing: torch.Tensor, alphas: list[float]) -> _Remix:
    """Kernel regression: ``a w_i + (1 - a) sum_j W_ij w_j`` with each item's a chosen on its neighbours."""
    n = base_routing.shape[0]
    has = run.graph.has_neighbours()
    chosen = torch.where(has, _select_alphas(run, alphas), torch.ones(n))
    mean = _mix(base_routing, run.graph, torch.arange(n), run.ref_routing)
    a = chosen[:, None, None]
    return _Remix(chosen, has & (chosen < 1.0), a * base_routing + (1 - a) * mean, None, None)


def _ngd_remix(run: _Run, base_routing: torch.Tensor, steps: int, lr: float, variable: str) -> _Remix:
    """Neighbourhood gradient descent: every item with neighbours changes."""
    targets, offsets = _ngd(run, base_routing, steps, lr, variable)
    chosen = torch.full((base_routing.shape[0],), float("nan"))
    solution = targets if variable == "replace" else offsets
    return _Remix(
        chosen,
        run.graph.has_neighbours().clone(),
        targets,
        offsets if variable == "offset" else None,
        solution,
    )


@dataclass
class _Run:
    """What every pass of one ``c3po`` call shares."""

    start: float  # perf_counter at the start, for the result's seconds
    model: PreTrainedModel
    info: MoEInfo
    stores: tuple[RoutingStore, RoutingStore]  # the references', the evaluation items'
    search: NeighbourSearch
    ref_embeddings: np.ndarray
    eval_embeddings: np.ndarray
    device: torch.device
    graph: NeighbourGraph | None = None  # each evaluation item's successful reference neighbours
    tuned: list[int] = field(default_factory=list)
    task_loss: str = "letter"
    refs: ItemSet | None = None
    evals: ItemSet | None = None
    ref_routing: torch.Tensor | None = None  # (N_ref, L, E) the references' routing, tuned layers
    counts: PassCount | None = None
    batch_size: int = 16
    prefix_cache: bool = False
    progress: bool = True
    frac: float = 1.0  # the share of a full forward that a pass replaying the prefix costs

    def prepare(
        self,
        tokenizer: PreTrainedTokenizerBase,
        layers: str | Sequence[int] | None,
        task_loss: str | None,
        max_length: int | None,
        batch_size: int,
        prefix_cache: bool,
        progress: bool,
    ) -> None:
        """Both stores' scoring and tuned layers checked against each other, their items encoded, and
        each evaluation item's neighbours among the successful references."""
        ref_store, eval_store = self.stores
        self.task_loss = resolve_task_loss(eval_store, task_loss)
        resolve_task_loss(ref_store, self.task_loss)
        self.tuned = resolve_layers(self.info, eval_store, layers)
        resolve_layers(self.info, ref_store, self.tuned)
        self.refs = prepare_items(ref_store, tokenizer, self.task_loss, self.tuned, max_length)
        self.evals = prepare_items(eval_store, tokenizer, self.task_loss, self.tuned, max_length)
        if self.task_loss == "letter":  # one letter table for both sets
            n_letters = max(it.n_choices for it in self.refs.items + self.evals.items)
            self.refs.letter_ids = self.evals.letter_ids = letter_ids_tensor(tokenizer, n_letters)
        self.graph = build_neighbour_graph(
            self.ref_embeddings, ref_store.successful, self.search, queries=self.eval_embeddings
        )
        self.ref_routing = ref_store.routing[:, self.refs.columns].float()
        self.counts = PassCount(len(self.evals.items))
        self.batch_size, self.prefix_cache, self.progress = batch_size, prefix_cache, progress
        self.frac = suffix_fraction(self.info, self.tuned) if prefix_cache and min(self.tuned) > 0 else 1.0


def _setup(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    reference: tuple[RoutingStore, np.ndarray | torch.Tensor],
    evaluation: tuple[RoutingStore, np.ndarray | torch.Tensor],
    search: NeighbourSearch,
    info: MoEInfo | None,
) -> _Run:
    """One embedding per item of each store, and both stores checked against the model."""
    (ref_store, ref_embeddings), (eval_store, eval_embeddings) = reference, evaluation
    ref_embeddings = np.asarray(ref_embeddings, dtype=np.float32)
    eval_embeddings = np.asarray(eval_embeddings, dtype=np.float32)
    if ref_embeddings.shape[0] != len(ref_store) or eval_embeddings.shape[0] != len(eval_store):
        raise RomaError("one embedding per store sample is needed, in the store's order")
    start = time.perf_counter()
    info = info or discover_routers(model)
    ref_store.fit_to_model(info)
    eval_store.fit_to_model(info)
    return _Run(
        start,
        model,
        info,
        (ref_store, eval_store),
        search,
        ref_embeddings,
        eval_embeddings,
        next(model.parameters()).device,
    )


def _base_pass(run: _Run) -> tuple[torch.Tensor, torch.Tensor]:
    """The base model's one pass per evaluation item: its answers and the live routing w_i."""
    evals, n = run.evals, len(run.evals.items)
    base_pred = torch.empty(n, dtype=torch.long)
    base_routing = torch.empty(n, len(run.tuned), run.info.num_experts)
    with torch.no_grad():
        for c in tqdm(range(0, n, run.batch_size), desc="c3po base", disable=not run.progress):
            items = evals.items[c : c + run.batch_size]
            out = items_forward(
                run.model, run.info, run.tuned, items, evals.pad, run.task_loss, evals.letter_ids
            )
            base_pred[c : c + len(items)] = out["scores"].argmax(-1).cpu()
            base_routing[c : c + len(items)] = out["routing"].float().cpu()
    run.counts.add_forward(n)
    return base_pred, base_routing


def _final_pass(
    run: _Run, base_pred: torch.Tensor, base_routing: torch.Tensor, remix: _Remix
) -> tuple[torch.Tensor, torch.Tensor]:
    """The final pass of each re-mixed item, with its new routing (the targets, or NGD's logit
    offsets); the others keep the base pass's answer and routing."""
    evals, targets, offsets = run.evals, remix.targets, remix.offsets
    predictions, routing = base_pred.clone(), base_routing.clone()
    todo = torch.nonzero(remix.changed).flatten().tolist()
    with torch.no_grad():
        for c in tqdm(range(0, len(todo), run.batch_size), desc="c3po apply", disable=not run.progress):
            rows = todo[c : c + run.batch_size]
            items = [evals.items[i] for i in rows]
            if offsets is not None:
                off = offsets[rows].to(run.device)
                out = items_forward(
                    run.model,
                    run.info,
                    run.tuned,
                    items,
                    evals.pad,
                    run.task_loss,
                    evals.letter_ids,
                    offsets={layer: off[:, li] for li, layer in enumerate(run.tuned)},
                )
            else:
                out = forward_with_targets(
                    run.model, run.info, run.tuned, evals, items, targets[rows].to(run.device)
                )
            predictions[rows] = out["scores"].argmax(-1).cpu()
            routing[rows] = out["routing"].float().cpu()
    run.counts.add_forward(len(todo))
    return predictions, routing


def _ref_cache(run: _Run, items: list[TrainItem], batch_size: int) -> PrefixCache | None:
    """Prefix states of the distinct reference items of a batch (each filled once per batch)."""
    if not run.prefix_cache:
        return None
    unique = list({it.index: it for it in items}.values())
    return fill_cache(run.model, run.info, unique, run.refs.pad, run.tuned, batch_size, run.counts)


def _select_alphas(run: _Run, alphas: list[float]) -> torch.Tensor:
    """Per evaluation item, the a of ``alphas`` (descending) minimising its neighbours' kernel-weighted
    loss under the same mixing rule; 1 for items without neighbours (see the module docstring)."""
    graph, refs, ref_routing, batch_size = run.graph, run.refs, run.ref_routing, run.batch_size
    n = graph.indices.shape[0]
    if len(alphas) == 1:
        return torch.full((n,), alphas[0])
    needed = sorted(set(graph.indices[graph.indices >= 0].tolist()))
    if not needed:
        return torch.ones(n)
    # Each neighbour's own neighbours among the successful reference samples, itself excluded.
    ref_graph = build_neighbour_graph(run.ref_embeddings, refs.store.successful, run.search)
    rows = torch.tensor(needed)
    own = ref_routing[rows]
    mean = _mix(own, ref_graph, rows, ref_routing)
    mixes = ref_graph.has_neighbours()[rows].tolist()
    # A neighbour without neighbours of its own routes the same for every a: one pass suffices.
    pairs = [(jp, ap) for jp in range(len(needed)) for ap in (range(len(alphas)) if mixes[jp] else [0])]
    loss = torch.empty(len(needed), len(alphas))
    with torch.no_grad():
        for c in tqdm(range(0, len(pairs), batch_size), desc="c3po select a", disable=not run.progress):
            chunk = pairs[c : c + batch_size]
            items = [refs.items[needed[jp]] for jp, _ in chunk]
            a = torch.tensor([alphas[ap] for _, ap in chunk])[:, None, None]
            jps = torch.tensor([jp for jp, _ in chunk])
            targets = a * own[jps] + (1 - a) * mean[jps]
            cache = _ref_cache(run, items, batch_size)
            out = forward_with_targets(
                run.model, run.info, run.tuned, refs, items, targets.to(run.device), cache
            )
            for r, (jp, ap) in enumerate(chunk):
                loss[jp, ap] = out["task"][r].float().cpu()
            run.counts.add_forward(len(chunk), run.frac)
    for jp in range(len(needed)):
        if not mixes[jp]:
            loss[jp] = loss[jp, 0]
    position = torch.full((len(refs.store),), -1, dtype=torch.long)
    position[rows] = torch.arange(len(needed))
    idx = graph.indices
    per = loss[position[idx.clamp_min(0)].clamp_min(0)]  # (N, K, G)
    objective = (graph.weights[:, :, None] * per * (idx >= 0)[:, :, None]).sum(1)  # (N, G)
    # argmin returns the first minimum: alphas run from large to small, so ties keep the smaller change.
    return torch.tensor(alphas)[objective.argmin(1)]


def _ngd(
    run: _Run, base_routing: torch.Tensor, steps: int, lr: float, variable: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Neighbourhood gradient descent per evaluation item (see the module docstring).

    Returns the target routing (N, L, E) (``replace``) and the logit offsets (N, L, E) (``offset``);
    items without neighbours keep their base routing / zero offsets.
    """
    n, n_layers, n_experts = base_routing.shape
    graph = run.graph
    targets, offsets = base_routing.clone(), torch.zeros(n, n_layers, n_experts)
    todo = torch.nonzero(graph.has_neighbours()).flatten().tolist()
    # Every item brings up to k neighbours: batch_size bounds the neighbour passes per forward.
    per_batch = max(1, run.batch_size // max(graph.k, 1))
    for c in tqdm(range(0, len(todo), per_batch), desc="c3po ngd", disable=not run.progress):
        chunk = todo[c : c + per_batch]
        if variable == "replace":
            init = base_routing[chunk].clamp_min(1e-9).log()  # softmax(init) == w_i
        else:
            init = torch.zeros(len(chunk), n_layers, n_experts)
        theta = _ngd_descend(run, chunk, init, steps, lr, variable)
        if variable == "replace":
            targets[chunk] = torch.softmax(theta, -1).float().cpu()
        else:
            offsets[chunk] = theta.float().cpu()
    return targets, offsets


def _ngd_descend(
    run: _Run, chunk: list[int], init: torch.Tensor, steps: int, lr: float, variable: str
) -> torch.Tensor:
    """NGD on a batch of evaluation items at once: ``steps`` Adam steps (cosine-decayed ``lr``) on each
    item's variable ``init`` (B, L, E), against its neighbours' kernel-weighted task loss."""
    graph, refs, tuned = run.graph, run.refs, run.tuned
    owner, refs_of, weights = [], [], []
    for b, i in enumerate(chunk):
        for j, w in zip(graph.indices[i].tolist(), graph.weights[i].tolist()):
            if j >= 0:
                owner.append(b)
                refs_of.append(j)
                weights.append(w)
    items = [refs.items[j] for j in refs_of]
    owner_t = torch.tensor(owner, device=run.device)
    w_t = torch.tensor(weights, device=run.device)
    cache = _ref_cache(run, items, len(items))
    theta = init.to(run.device).requires_grad_(True)
    opt = torch.optim.Adam([theta], lr=lr)
    for step in range(steps):
        for group in opt.param_groups:  # cosine decay from lr towards 0
            group["lr"] = lr * 0.5 * (1 + math.cos(math.pi * step / steps))
        if variable == "replace":
            out = forward_with_targets(
                run.model, run.info, tuned, refs, items, torch.softmax(theta, -1)[owner_t], cache
            )
        else:
            off = theta[owner_t]
            out = items_forward(
                run.model,
                run.info,
                tuned,
                items,
                refs.pad,
                refs.task_loss,
                refs.letter_ids,
                cache=cache,
                offsets={layer: off[:, li] for li, layer in enumerate(tuned)},
            )
        # Per-item objectives are independent; their sum gives each item its own gradient.
        loss = (w_t * out["task"]).sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        run.counts.add_forward(len(items), run.frac)
        run.counts.add_backward(len(items), run.frac)
    return theta.detach()


@dataclass
class C3POConfig(Config):
    """Settings of C3PO (``roma experiment`` method kind ``c3po``)."""

    k: int = field(
        default=3, metadata={"help": "successful reference neighbours per item", "range": (1, None)}
    )
    sigma: float = field(
        default=0.4, metadata={"help": "Gaussian kernel width on 1 - cosine", "range": (1e-12, None)}
    )
    mode: Literal["kernel", "ngd"] = field(
        default="kernel", metadata={"help": "`kernel` regression or neighbourhood gradient descent (`ngd`)"}
    )
    alphas: tuple[float, ...] = field(
        default=DEFAULT_ALPHAS,
        metadata={"help": "kernel regression's mixing weights to choose from", "range": (0, 1)},
    )
    ngd_steps: int = field(default=10, metadata={"help": "NGD's Adam steps", "range": (0, None)})
    ngd_lr: float = field(default=0.1, metadata={"help": "NGD's initial learning rate", "range": (0, None)})
    ngd_variable: Literal["replace", "offset"] = field(
        default="replace",
        metadata={"help": "NGD optimises the routing (`replace`) or logit offsets (`offset`)"},
    )
    dedupe_threshold: float = field(
        default=0.95,
        metadata={"help": "reference samples more similar than this are dropped", "range": (-1, 1.01)},
    )
    max_length: int | None = field(
        default=None, metadata={"help": "longest prompt in tokens", "range": (1, None)}
    )
    prefix_cache: bool = field(
        default=False, metadata={"help": "replay the frozen layers for neighbours' passes"}
    )


def run_c3po(inputs: TestTimeInputs, config: C3POConfig) -> TestTimeOutcome:
    """The registered entry point: C3PO re-mixing on one evaluation split."""
    res = c3po(
        inputs.model,
        inputs.tokenizer,
        inputs.reference_store,
        inputs.reference_embeddings(),
        inputs.eval_store,
        inputs.eval_embeddings(),
        layers=inputs.layers,
        k=config.k,
        sigma=config.sigma,
        mode=config.mode,
        alphas=config.alphas,
        ngd_steps=config.ngd_steps,
        ngd_lr=config.ngd_lr,
        ngd_variable=config.ngd_variable,
        dedupe_threshold=config.dedupe_threshold,
        batch_size=inputs.batch_size,
        max_length=config.max_length,
        prefix_cache=config.prefix_cache,
        progress=inputs.progress,
        info=inputs.info,
    )
    extra = {
        "cost_vs_base": res.passes.cost_vs_base,
        "extra_forwards": res.passes.extra_forwards,
        "changed_correctness": sum(a != b for a, b in zip(res.correct_base, res.correct)),
    }
    if res.mode == "kernel":  # how often each a was chosen; a = 1 keeps the base routing
        extra["alpha_counts"] = dict(Counter(f"{a:g}" for a in res.alphas))
    return TestTimeOutcome(res.correct, extra)


register(
    MethodSpec(
        "c3po",
        "test_time",
        C3POConfig,
        run_c3po,
        "test-time re-mixing of routing from successful neighbours (kernel or NGD)",
    )
)
