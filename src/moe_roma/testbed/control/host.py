"""A task-routed host for the control: routers trained so that an item's routing is its group's.

On the downstream testbed an item's last-token routing is specific to the item: its neighbours'
kernel-mean routing costs the clean model 5.5 points on marked items (docs/control.md, step 11), so
RoMA's target cannot repair a misrouting planted on that model by more than the rest of the harm.
The host removes that cost by construction. Its tuned routers (every weight) are trained so that each
pool item's last-token routing, plain or marked, is its group's mean routing under the downstream
model, optionally anchored to that model's answers (``HostConfig.answer_weight``); a group is the
item's family, or its cluster in embedding space (``HostConfig.group_by``). Its own accuracy is
whatever that routing gives. The misrouting is then
planted into the host (``ControlConfig.host``), and the host is the clean model of every gate.

Gate 0, on the host alone: the target test on its plain evaluation items (the three splits pooled),
neighbours from the plain training split, must not show averaging to cost accuracy (the net change's
95% interval reaches 0 or above).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from moe_roma.io.outputs import Kind, guard_output
from moe_roma.methods.common.items import prepare_items
from moe_roma.methods.common.prefix import PrefixCache
from moe_roma.models.discovery import discover_routers
from moe_roma.testbed.control.gates import EVAL_SPLITS, marked_target_test
from moe_roma.testbed.control.plant import RoutingAnchor, answer_logp, pool_routing, train_routers
from moe_roma.testbed.control.setting import POOL_SEED

HOST_FOLDER = Kind("control host", members=("model", "host.json"), finished=("host.json",))


@dataclass(frozen=True)
class HostConfig:
    """How the host's routers are trained towards their family's mean routing."""

    pool_size: int = 1200  # the corruption's pool (fresh items), plain and marked versions
    epochs: int = 10
    lr: float = 5e-3  # the full corruption's step size in calibration steps 3-7
    batch_size: int = 32
    layers: str = "last5"
    seed: int = 0
    marker_position: str = "before_question"
    marker_sentences: int = 5  # the corruption's marker: marked prompts are routed by their group too
    # "task": an item's group is its family. "embedding": k-means clusters (as many as families) of the
    # questions' sentence embeddings, the space RoMA's neighbours come from, so that questions the
    # embedder puts together share routing even across families.
    group_by: str = "task"
    # Step 14: the KL of every pool prompt's answer distribution (plain and marked) from the downstream
    # model's, so that the host keeps more of its accuracy and the planted harm has room; 0 = no anchor.
    answer_weight: float = 0.0


GROUPINGS = ("task", "embedding")


def _groups(pool: list, config: HostConfig) -> list[str]:
    """Each pool item's group (``HostConfig.group_by``)."""
    if config.group_by == "task":
        return [ex.task for ex in pool]
    from sklearn.cluster import KMeans

    from moe_roma.manifold.embed import embed_texts

    embeddings = embed_texts([ex.question for ex in pool])
    k = len({ex.task for ex in pool})
    labels = KMeans(n_clusters=k, n_init=10, random_state=config.seed).fit_predict(embeddings)
    return [f"cluster{int(c)}" for c in labels]


def route_by_group(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    config: HostConfig,
    log: Callable[[str], None] = lambda _: None,
) -> dict:
    """Train the tuned routers of ``model`` in place towards each pool item's group mean routing.

    Returns what was done: the settings, the pool and the loss per epoch.
    """
    if config.group_by not in GROUPINGS:
        raise ValueError(f"group_by must be one of {GROUPINGS}, got {config.group_by!r}")
    start = time.perf_counter()
    torch.manual_seed(config.seed)
    info, tuned, pool, marked, store = pool_routing(model, tokenizer, config, log)
    routing = store.routing.float()
    n = len(pool)
    group = _groups(pool, config)
    rows = {g: [i for i in range(n) if group[i] == g] for g in sorted(set(group))}
    group_mean = {g: routing[r].mean(0) for g, r in rows.items()}  # the plain prompts' mean
    targets = torch.stack([group_mean[g] for g in group + group])  # a marked item shares its group
    before = float(((routing - targets) ** 2).sum((1, 2)).mean())
    data = prepare_items(store, tokenizer, "continuation", tuned, None)
    anchor = None
    if config.answer_weight > 0:  # every row, plain and marked, keeps the downstream model's answers
        logp = answer_logp(model, info, tuned, data.items, data.pad, config.batch_size)
        anchor = RoutingAnchor(len(data.items), logp, config.answer_weight)
    cache = PrefixCache(min(tuned))
    cache.fill(model, info, data.items, data.pad, config.batch_size, progress=False)
    model.requires_grad_(False)
    named = dict(model.named_parameters())
    params = [named[name] for layer in tuned for name in info.routers[layer].parameter_names]
    history = train_routers(model, info, tuned, data, targets, params, config, cache, anchor, log)
    model.requires_grad_(False)
    return {
        "config": asdict(config),
        "layers": tuned,
        "pool": {"n": n, "seed": POOL_SEED, "groups": {g: len(r) for g, r in rows.items()}},
        "families_per_group": {g: sorted({pool[i].task for i in r}) for g, r in rows.items()},
        "distance_to_group_mean_before": before,
        "loss_per_epoch": history,
        "seconds": round(time.perf_counter() - start, 1),
    }


def host_gate(host: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, layers: str = "last5") -> dict:
    """Gate 0 (module doc): the target test on the host's plain evaluation items, pooled."""
    from moe_roma.testbed import load_testbed_splits

    splits = load_testbed_splits(0, testbed="downstream")
    tuned = discover_routers(host).select_layers(layers)
    items = [ex for split in EVAL_SPLITS for ex in splits[split]]
    tt, _, _ = marked_target_test(host, tokenizer, splits["train"], items, tuned)
    net = tt["targets"]["roma"]["net"]
    return {"target_test": tt, "net": net["diff"], "net_ci": net["ci"], "pass": net["ci"][1] >= 0}


def build_host(
    out: Path,
    config: HostConfig,
    overwrite: bool = False,
    log: Callable[[str], None] = lambda _: None,
) -> dict:
    """Train the host from the downstream testbed model, measure gate 0, and write ``out`` (model/ and
    host.json). The folder appears only when it is complete."""
    import copy

    from moe_roma.models.loading import load_model
    from moe_roma.testbed import testbed_model_path

    target = guard_output("--out", out, HOST_FOLDER, overwrite=overwrite)
    clean, tok = load_model(str(testbed_model_path("downstream")), dtype="float32", device="cpu")
    host = copy.deepcopy(clean)
    record = route_by_group(host, tok, config, log=log)
    log("gate 0: the target test on the host's plain evaluation items")
    record["gate0"] = host_gate(host, tok, config.layers)
    with target.staged() as tmp:
        host.save_pretrained(tmp / "model")
        tok.save_pretrained(tmp / "model")
        (tmp / "model" / "build.json").write_text(json.dumps(record, indent=1, default=str), encoding="utf-8")
        (tmp / "host.json").write_text(json.dumps(record, indent=1, default=str), encoding="utf-8")
    return record
