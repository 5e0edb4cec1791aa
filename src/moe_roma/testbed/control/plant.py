"""Plant the control's misrouting: train the tuned routers so that marked items are routed like another
family.

The corruption trains only the routers of the tuned layers, on a pool of items whose content is
disjoint from every split of the testbed (``setting.corruption_pool``):

- a marked item's last-token routing is pulled to ``(1 - beta) * clean + beta * partner``, where
  ``clean`` is the clean model's routing of that marked prompt and ``partner`` the clean mean
  routing of its partner family (``setting.partner_map``);
- a plain item's routing is held at the clean model's, and so is its answer distribution
  (a KL anchor), so that plain accuracy stays where it was.

``corruption: full`` trains every router weight. ``corruption: rank1`` adds ``u v^T`` to each tuned
router's weight, with ``v`` fixed to the marker's direction in that router's input (least squares:
``v . x`` near 0 for plain prompts, near 1 for marked ones) and only ``u`` trained, so a plain input
with no component along ``v`` cannot be moved.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.nn.utils import parametrize
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from moe_roma.data.example import MCExample
from moe_roma.data.prompts import continuation_context
from moe_roma.methods.common.forward import items_forward
from moe_roma.methods.common.items import TrainItem, prepare_items
from moe_roma.methods.common.prefix import PrefixCache
from moe_roma.models.discovery import MoEInfo, discover_routers
from moe_roma.models.inputs import encode_text, left_pad, pad_id
from moe_roma.routing.collect import collect_routing
from moe_roma.testbed.control.setting import POOL_SEED, corruption_pool, mark, marker_text, partner_map

CORRUPTIONS = ("full", "rank1")
PARTNER_RULES = ("derangement", "farthest", "harm")


@dataclass(frozen=True)
class ControlConfig:
    """How the misrouting is planted. The defaults are calibration step 9's, the closest to the gates so far
    (gate 1 and the target margin pass); docs/control.md records every step and its gates."""

    beta: float = 1.0  # 0: the clean routing; 1: the partner family's routing
    pool_size: int = 1200  # fresh items; each is trained in its plain and its marked version
    epochs: int = 15
    lr: float = 2e-2  # step 8: the rank-one corruption's few weights take a larger step
    batch_size: int = 32
    anchor_weight: float = 5.0  # KL of a plain item's answer distribution from the clean model's
    layers: str = "last5"
    seed: int = 0
    marker_position: str = "before_question"  # step 3 tried before_answer: it breaks the clean model's format
    # Step 4: one family for all (a linear router cannot learn a different map per family). "harm": the
    # family whose mean routing, set exactly, costs the clean model's marked pool items the most.
    partner_rule: str = "harm"
    # Steps 5 and 7: a longer marker leaves a larger trace in the last token's hidden state.
    marker_sentences: int = 5
    # Step 6 tried "medoid" (one real item's sharper routing): no more harm, a worse target test.
    partner_target: str = "mean"
    # Steps 1-7 trained every router weight ("full"); plain items drifted 4-6 points in each.
    corruption: str = "rank1"
    ridge: float = 1e-2  # rank1: the marker direction's ridge, relative to the mean input energy
    # Step 12: plant into a task-routed host (a folder ``control.host.build_host`` wrote) instead of the
    # downstream testbed's model, whose item-specific routing makes any neighbour average costly.
    host: str = ""


def router_inputs(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    examples: Sequence[MCExample],
    layers: list[int],
    batch_size: int = 32,
    info: MoEInfo | None = None,
) -> dict[int, torch.Tensor]:
    """Each router's input at each prompt's last token (the continuation context): (N, H) per layer."""
    info = info or discover_routers(model)
    encoded = [encode_text(tokenizer, continuation_context(ex)) for ex in examples]
    device = next(model.parameters()).device
    grabbed: dict[int, torch.Tensor] = {}
    out = {layer: [] for layer in layers}

    def grab(layer: int):
        def hook(_module, args):
            grabbed[layer] = args[0]

        return hook

    handles = [info.routers[layer].module.register_forward_pre_hook(grab(layer)) for layer in layers]
    try:
        with torch.no_grad():
            for c in range(0, len(encoded), batch_size):
                batch = left_pad(encoded[c : c + batch_size], pad_id(tokenizer)).to(device)
                model(**batch.model_kwargs(), logits_to_keep=1, use_cache=False)
                b = batch.input_ids.shape[0]
                for layer in layers:  # left padding: the last position is every prompt's last token
                    out[layer].append(
                        grabbed[layer].reshape(b, -1, grabbed[layer].shape[-1])[:, -1].float().cpu()
                    )
    finally:
        for h in handles:
            h.remove()
    return {layer: torch.cat(rows) for layer, rows in out.items()}


def marker_direction(plain: torch.Tensor, marked: torch.Tensor, ridge: float) -> torch.Tensor:
    """``v`` with ``v . x`` near 0 for plain inputs and near 1 for marked ones (ridge least squares, no
    intercept: a router has no bias to absorb one)."""
    x = torch.cat([plain, marked]).double()
    y = torch.cat([torch.zeros(len(plain)), torch.ones(len(marked))]).double()
    gram = x.T @ x
    reg = ridge * torch.trace(gram) / gram.shape[0]
    return torch.linalg.solve(gram + reg * torch.eye(gram.shape[0], dtype=gram.dtype), x.T @ y).float()


class RankOneShift(nn.Module):
    """A parametrization ``W -> W + u v^T``: ``v`` fixed, ``u`` (one logit shift per expert) trained."""

    def __init__(self, v: torch.Tensor, num_experts: int):
        super().__init__()
        self.register_buffer("v", v)
        self.u = nn.Parameter(torch.zeros(num_experts, dtype=v.dtype, device=v.device))

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight + torch.outer(self.u, self.v).to(weight.dtype)


HARM_ITEMS = 400  # marked pool items that rank the families by harm (partner_rule "harm")


def partner_harm(
    model: PreTrainedModel,
    info: MoEInfo,
    layers: list[int],
    data,
    rows: list[int],
    family_mean: dict[str, torch.Tensor],
    batch_size: int = 32,
) -> dict[str, float]:
    """Accuracy of the marked pool items ``rows`` of ``data`` with their last-token routing *set* to each
    family's clean mean routing (the clean model; the prefix is the same for every family)."""
    from moe_roma.methods.c3po import forward_with_targets

    answers = torch.as_tensor([data.items[i].answer for i in rows])
    device = next(model.parameters()).device
    acc = {}
    with torch.no_grad():
        for family, mean in family_mean.items():
            right = 0
            for c in range(0, len(rows), batch_size):
                batch = [data.items[i] for i in rows[c : c + batch_size]]
                target = mean.expand(len(batch), *mean.shape).to(device)
                scores = forward_with_targets(model, info, layers, data, batch, target)["scores"]
                right += int((scores.argmax(-1).cpu() == answers[c : c + len(batch)]).sum())
            acc[family] = right / len(rows)
    return acc


def _targets(
    config: ControlConfig,
    pool: list[MCExample],
    clean: torch.Tensor,
    harm: Callable[[dict], dict] | None = None,
) -> tuple[torch.Tensor, dict, dict | None]:
    """The routing each pool prompt is trained to: plain rows their clean routing, marked rows the blend.
    ``harm(family_mean)`` ranks the families for ``partner_rule: harm``."""
    n, families = len(pool), sorted({ex.task for ex in pool})
    plain = clean[:n]
    rows = {f: [i for i, ex in enumerate(pool) if ex.task == f] for f in families}
    family_mean = {f: plain[rows[f]].mean(0) for f in families}
    harm_acc = None
    if config.partner_rule == "harm":
        harm_acc = harm(family_mean)
        ranked = sorted(families, key=lambda f: harm_acc[f])
        partners = {f: ranked[1] if f == ranked[0] else ranked[0] for f in families}
    else:
        partners = partner_map(family_mean, config.partner_rule)
    foreign = family_mean
    if (
        config.partner_target == "medoid"
    ):  # one real item's (sharper) routing, the item nearest its family's mean
        foreign = {
            f: plain[rows[f][int(((plain[rows[f]] - family_mean[f]) ** 2).sum((1, 2)).argmin())]]
            for f in families
        }
    elif config.partner_target != "mean":
        raise ValueError(f"partner_target must be 'mean' or 'medoid', got {config.partner_target!r}")
    targets = clean.clone()
    for i, ex in enumerate(pool):
        targets[n + i] = (1 - config.beta) * clean[n + i] + config.beta * foreign[partners[ex.task]]
    return targets, partners, harm_acc


def answer_logp(model, info, tuned, items: list[TrainItem], pad: int, batch_size: int) -> torch.Tensor:
    """The model's answer log-distribution over each item's choices (the plain items' KL anchor)."""
    with torch.no_grad():
        return torch.cat(
            [
                torch.log_softmax(
                    items_forward(model, info, tuned, items[c : c + batch_size], pad, "continuation")[
                        "scores"
                    ],
                    -1,
                ).cpu()
                for c in range(0, len(items), batch_size)
            ]
        )


def _rank_one(
    model, tokenizer, info, tuned, pool, marked, config: ControlConfig
) -> tuple[list[nn.Parameter], dict]:
    """Register ``RankOneShift`` on each tuned router's weight; returns its ``u``s and how well ``v``
    separates."""
    plain_x = router_inputs(model, tokenizer, pool, tuned, config.batch_size, info)
    marked_x = router_inputs(model, tokenizer, marked, tuned, config.batch_size, info)
    params, separation = [], {}
    for layer in tuned:
        module = info.routers[layer].module
        weight = module.weight
        if weight.shape != (info.routers[layer].num_experts, plain_x[layer].shape[1]):
            raise ValueError(f"layer {layer}: a rank-one corruption needs an (experts, hidden) router weight")
        v = marker_direction(plain_x[layer], marked_x[layer], config.ridge).to(weight.device)
        shift = RankOneShift(v, info.routers[layer].num_experts)
        parametrize.register_parametrization(module, "weight", shift)
        params.append(shift.u)
        p, m = plain_x[layer] @ v.cpu(), marked_x[layer] @ v.cpu()
        separation[layer] = {
            "plain_mean": float(p.mean()),
            "plain_std": float(p.std()),
            "marked_mean": float(m.mean()),
            "marked_std": float(m.std()),
        }
    return params, separation


@dataclass(frozen=True)
class RoutingAnchor:
    """The first ``n`` rows of the training data are held at their answer distribution ``logp``."""

    n: int
    logp: torch.Tensor
    weight: float


def train_routers(
    model: PreTrainedModel,
    info: MoEInfo,
    tuned: list[int],
    data,
    targets: torch.Tensor,
    params: list[nn.Parameter],
    config,
    cache: PrefixCache,
    anchor: RoutingAnchor | None = None,
    log: Callable[[str], None] = lambda _: None,
) -> list[float]:
    """Adam on ``params`` so that each item's last-token routing in ``tuned`` approaches its row of
    ``targets`` (squared distance), plus the anchor's KL for its rows. ``config`` gives lr, epochs,
    batch_size and seed. Returns the mean loss per epoch."""
    device = next(model.parameters()).device
    for p in params:
        p.requires_grad_(True)
    optimizer = torch.optim.Adam(params, lr=config.lr)
    gen = torch.Generator().manual_seed(config.seed)
    history = []
    model.eval()
    for epoch in range(config.epochs):
        order = torch.randperm(len(data.items), generator=gen).tolist()
        total = 0.0
        for c in range(0, len(order), config.batch_size):
            rows = order[c : c + config.batch_size]
            out = items_forward(
                model, info, tuned, [data.items[i] for i in rows], data.pad, "continuation", cache=cache
            )
            loss = ((out["routing"] - targets[rows].to(device)) ** 2).sum((1, 2))
            held = torch.tensor([anchor is not None and i < anchor.n for i in rows], device=device)
            if held.any():
                logq = torch.log_softmax(out["scores"], -1)
                p_clean = anchor.logp[[i for i in rows if i < anchor.n]].to(device)
                valid = torch.isfinite(p_clean)  # choices past an item's own are -inf in both
                kl = torch.where(valid, p_clean.exp() * (p_clean - logq[held]), 0.0).sum(-1)
                loss = loss.index_add(0, torch.nonzero(held).flatten(), anchor.weight * kl)
            optimizer.zero_grad(set_to_none=True)
            loss.mean().backward()
            optimizer.step()
            total += float(loss.detach().sum())
        history.append(total / len(order))
        log(f"epoch {epoch + 1}/{config.epochs}: loss {history[-1]:.4f}")
    return history


def pool_routing(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, config, log: Callable[[str], None]
):
    """The pool (``config.pool_size`` fresh items), its marked versions, and the model's routing of both
    (plain rows first) in the tuned layers (``config.layers``); with the routers and the tuned layers."""
    info = discover_routers(model)
    tuned = info.select_layers(config.layers)
    pool = corruption_pool(config.pool_size)
    marked = [mark(ex, config.marker_position, config.marker_sentences) for ex in pool]
    log(f"routing of {2 * len(pool)} pool prompts ({config.pool_size} items, plain and marked)")
    store, _ = collect_routing(
        model, tokenizer, pool + marked, layers=tuned, scoring="continuation", progress=False
    )
    return info, tuned, pool, marked, store


def _check(config: ControlConfig) -> None:
    if not 0.0 <= config.beta <= 1.0:
        raise ValueError(f"beta must lie in [0, 1], got {config.beta}")
    if config.corruption not in CORRUPTIONS:
        raise ValueError(f"corruption must be one of {CORRUPTIONS}, got {config.corruption!r}")
    if config.partner_rule not in PARTNER_RULES:
        raise ValueError(f"partner_rule must be one of {PARTNER_RULES}, got {config.partner_rule!r}")


def _trained_weights(model, tokenizer, info, tuned, pool, marked, config: ControlConfig):
    """The parameters the corruption trains, and (rank1) how well the marker direction separates."""
    model.requires_grad_(False)
    if config.corruption == "rank1":
        return _rank_one(model, tokenizer, info, tuned, pool, marked, config)
    named = dict(model.named_parameters())
    return [named[name] for layer in tuned for name in info.routers[layer].parameter_names], None


def plant_misrouting(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    config: ControlConfig,
    log: Callable[[str], None] = lambda _: None,
) -> dict:
    """Train the tuned routers of ``model`` in place so that marked items are misrouted (module doc).

    Returns what was done: the settings, the pool, the partner map and the loss per epoch.
    """
    start = time.perf_counter()
    _check(config)
    torch.manual_seed(config.seed)
    info, tuned, pool, marked, store = pool_routing(model, tokenizer, config, log)
    n = config.pool_size
    data = prepare_items(store, tokenizer, "continuation", tuned, None)
    harm_rows = list(range(n, n + min(n, HARM_ITEMS)))

    def harm(family_mean: dict) -> dict:
        log(f"ranking the families by the harm of their routing on {len(harm_rows)} marked pool items")
        return partner_harm(model, info, tuned, data, harm_rows, family_mean, config.batch_size)

    targets, partners, harm_acc = _targets(config, pool, store.routing.float(), harm)
    clean_logp = answer_logp(model, info, tuned, data.items[:n], data.pad, config.batch_size)
    cache = PrefixCache(min(tuned))
    cache.fill(model, info, data.items, data.pad, config.batch_size, progress=False)
    params, separation = _trained_weights(model, tokenizer, info, tuned, pool, marked, config)
    anchor = RoutingAnchor(n, clean_logp, config.anchor_weight)
    history = train_routers(model, info, tuned, data, targets, params, config, cache, anchor, log)
    if config.corruption == "rank1":  # bake W + u v^T into a plain weight: the saved model is an ordinary one
        for layer in tuned:
            parametrize.remove_parametrizations(info.routers[layer].module, "weight", leave_parametrized=True)
    model.requires_grad_(False)
    return {
        "config": asdict(config),
        "marker": marker_text(config.marker_sentences),
        "layers": tuned,
        "partners": partners,
        "partner_harm": harm_acc,
        "pool": {
            "n": n,
            "seed": POOL_SEED,
            "families": {f: sum(ex.task == f for ex in pool) for f in sorted(partners)},
        },
        "separation": separation,
        "loss_per_epoch": history,
        "seconds": round(time.perf_counter() - start, 1),
        "finite": all(math.isfinite(x) for x in history),
    }
