"""Build the testbed model: tokenizer, tiny OLMoE, deterministic pre-training, evaluation.

The result is a plain Hugging Face folder (``config.json``, ``model.safetensors``,
tokenizer files, ``build_info.json``) that ``AutoModelForCausalLM.from_pretrained`` and
``AutoTokenizer.from_pretrained`` load with no project code.

Pre-training text is ``Question: {question}\\nAnswer: {right choice}`` (the continuation
prompt followed by the answer), plus plain statements of the bundled facts; the model learns
to *produce the answer text*, and is evaluated by comparing the choices' continuation
log-likelihoods (``moe_roma.testbed.scoring``).
"""

from __future__ import annotations

import math
import random
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from moe_roma.data.example import MCExample
from moe_roma.data.prompts import continuation_context
from moe_roma.io.atomic import write_json_atomic
from moe_roma.testbed import tasks
from moe_roma.testbed.config import BuildConfig

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from moe_roma.models.discovery import MoEInfo

SPECIAL_TOKENS = ("<pad>", "<unk>", "<bos>", "<eos>")
MAX_NUMBER = 200  # every integer up to this gets its own token (larger ones come from the texts)


# --------------------------------------------------------------------------- tokenizer

_WORD_RE = re.compile(r"\w+|[^\w\s]+")  # the same split as tokenizers' Whitespace pre-tokenizer


def vocabulary(texts: Sequence[str]) -> list[str]:
    """Special tokens, then every lower-cased word of ``texts`` and all numbers, sorted."""
    words = {w for t in texts for w in _WORD_RE.findall(t.lower())}
    words |= {str(n) for n in range(MAX_NUMBER + 1)}
    words -= set(SPECIAL_TOKENS)
    return [*SPECIAL_TOKENS, *sorted(words)]


def build_tokenizer(texts: Sequence[str]):
    """A word-level ``PreTrainedTokenizerFast`` over the words of ``texts``.

    Lower-cases and splits on whitespace and punctuation. It adds no special tokens: the
    project encodes every text without them (as lm-evaluation-harness does for causal LMs),
    so the model is pre-trained on the same kind of input, ``<eos>`` closing each sequence.
    Pads on the left (the usual setting for batched generation; scorers pad explicitly).
    """
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(vocabulary(texts))}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<bos>",
        eos_token="<eos>",
        pad_token="<pad>",
        unk_token="<unk>",
        padding_side="left",
        model_max_length=256,
    )


# --------------------------------------------------------------------------- corpus


def vocab_texts(suite: dict[str, list[MCExample]]) -> list[str]:
    """All text the tokenizer must cover: every split's questions and choices and the facts.

    Words seen only in evaluation wordings still get a token (with an untrained embedding),
    so a shifted template is never reduced to ``<unk>``.
    """
    out = list(tasks.knowledge_sentences())
    for items in suite.values():
        for ex in items:
            out.append(continuation_context(ex))
            out.extend(ex.choices)
    return out


def encode_corpus(
    tokenizer, suite: dict[str, list[MCExample]], cfg: BuildConfig
) -> list[tuple[list[int], list[float]]]:
    """(token ids, per-target loss weights) for every pre-training sequence, in a fixed order.

    Weights are for predicting token ``t+1`` from position ``t`` (so one shorter than ids):
    answer tokens and ``<eos>`` weigh 1, question tokens ``cfg.question_weight``; fact
    sentences weigh 1 throughout (they carry knowledge, so every token is worth learning).
    """
    eos = tokenizer.eos_token_id

    def enc(text: str) -> list[int]:
        return list(tokenizer(text, add_special_tokens=False)["input_ids"])

    seqs: list[tuple[list[int], list[float]]] = []
    for ex in suite["pretrain"]:
        ctx = enc(continuation_context(ex))
        ans = enc(" " + ex.choices[ex.answer])
        ids = ctx + ans + [eos]
        n_q = len(ctx) - 1  # targets inside the context (its first token is never a target)
        seqs.append((ids, [cfg.question_weight] * n_q + [1.0] * (len(ans) + 1)))
    for _ in range(cfg.knowledge_repeats):
        for sent in tasks.knowledge_sentences():
            ids = enc(sent) + [eos]
            seqs.append((ids, [1.0] * (len(ids) - 1)))
    return seqs


# --------------------------------------------------------------------------- model


def make_model(cfg: BuildConfig, tokenizer):
    """A fresh model of ``cfg.arch`` (default: the testbed's own OLMoE shape), with a near-zero router
    initialisation when asked (``router_init_std``)."""
    from moe_roma.testbed.model_shapes import make_model as make_arch

    model = make_arch(cfg, tokenizer)
    if cfg.router_init_std > 0:
        from moe_roma.testbed.alignment import apply_router_init

        apply_router_init(model, cfg.router_init_std, cfg.seed)
    return model


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _batch(seqs: list[tuple[list[int], list[float]]], pad: int) -> tuple[torch.Tensor, ...]:
    width = max(len(s) for s, _ in seqs)
    ids = torch.full((len(seqs), width), pad, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    weights = torch.zeros((len(seqs), width - 1))
    for r, (s, w) in enumerate(seqs):
        ids[r, : len(s)] = torch.tensor(s)
        mask[r, : len(s)] = 1
        weights[r, : len(w)] = torch.tensor(w)
    return ids, mask, weights


def _epoch_batches(lengths: list[int], batch_size: int, gen: torch.Generator) -> list[list[int]]:
    """One epoch of batches: shuffled, then length-sorted within windows (less padding)."""
    order = torch.randperm(len(lengths), generator=gen).tolist()
    window = batch_size * 32
    batches = []
    for start in range(0, len(order) - batch_size + 1, window):
        chunk = sorted(order[start : start + window], key=lambda i: lengths[i])
        batches += [chunk[k : k + batch_size] for k in range(0, len(chunk) - batch_size + 1, batch_size)]
    perm = torch.randperm(len(batches), generator=gen).tolist()
    return [batches[i] for i in perm]


@dataclass
class _Pretraining:
    """What pre-training carries from one step to the next."""

    model: Any
    seqs: list[tuple[list[int], list[float]]]
    cfg: BuildConfig
    pad_id: int
    shape: Any  # testbed.model_shapes.Shape
    routers: list[torch.nn.Module]  # the router modules in layer order (none for a dense model)
    opt: torch.optim.Optimizer
    hooks: list  # the router-jitter hooks, removed at the end
    gen: torch.Generator  # the data order's
    task_ids: torch.Tensor  # each sequence's task index
    prior: Any  # testbed.alignment.TaskPrior of ``--align-prior task``, else None
    idf: torch.Tensor | None  # ``--align manifold``'s inverse document frequencies
    want_routing: bool
    metrics: Path | None  # metrics.jsonl, when routing health is recorded
    t0: float = 0.0
    batches: list[list[int]] = field(default_factory=list)  # what is left of the epoch
    warned: set = field(default_factory=set)
    warnings: list[dict] = field(default_factory=list)
    n_tokens: int = 0
    run_loss: float = 0.0

    @property
    def moe(self) -> bool:
        return self.shape.num_experts > 0

    def lr_at(self, step: int) -> float:
        """Linear warm-up, then cosine decay to a tenth of the peak."""
        cfg = self.cfg
        if step < cfg.warmup:
            return cfg.lr * (step + 1) / cfg.warmup
        frac = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
        return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))


@dataclass
class _PretrainStep:
    """One pre-training step's figures, for its record."""

    loss: torch.Tensor  # the language-model loss
    aux: torch.Tensor  # the load-balancing loss (0 for a dense model)
    z_loss: torch.Tensor | None
    align: torch.Tensor | None
    lam: float
    routing: torch.Tensor | None  # (B, T, L, E)
    mask: torch.Tensor
    grad_norms: dict[str, float] | None  # per router, before clipping, at a recorded step
    record: bool


def pretrain(
    model,
    seqs: list[tuple[list[int], list[float]]],
    cfg: BuildConfig,
    pad_id: int,
    log: Callable[[str], None] = print,
    eval_fn: Callable[[int], None] | None = None,
    eval_every: int = 0,
    tasks: Sequence[int] | None = None,
    metrics_path: Path | None = None,
) -> dict:
    """AdamW with warm-up and cosine decay over a fixed, seeded data order.

    With ``cfg.align`` the routing alignment term is added (``testbed.alignment``; ``tasks`` gives
    each sequence's task index, needed by ``--align-prior task``); with ``cfg.metrics_every`` routing
    health goes to ``metrics_path`` (JSON lines). Returns the run's figures: real tokens trained on,
    seconds, tokens/s and the collapse warnings.
    """
    run = _pretrain_setup(model, seqs, cfg, pad_id, tasks, metrics_path)
    run.t0 = time.time()
    model.train()
    for step in range(cfg.steps):
        done = _pretrain_step(run, step)
        _pretrain_log(run, step, done, log)
        if eval_fn is not None and eval_every and (step + 1) % eval_every == 0 and step + 1 < cfg.steps:
            eval_fn(step + 1)
            model.train()
    return _pretrain_finish(run)


def _pretrain_setup(
    model,
    seqs: list[tuple[list[int], list[float]]],
    cfg: BuildConfig,
    pad_id: int,
    tasks: Sequence[int] | None,
    metrics_path: Path | None,
) -> _Pretraining:
    """The optimiser, the router jitter, the alignment's inputs and a fresh metrics file."""
    from moe_roma.testbed import alignment as al
    from moe_roma.testbed.model_shapes import shape_of

    shape = shape_of(cfg)
    model_routers = al.routers(model) if shape.num_experts > 0 else []
    gen = torch.Generator().manual_seed(cfg.seed)
    opt = _pretrain_optimizer(model, cfg, model_routers)
    hooks = al.add_router_jitter(model, cfg.router_jitter) if cfg.router_jitter > 0 else []
    task_ids = torch.as_tensor(list(tasks) if tasks is not None else [0] * len(seqs), dtype=torch.long)
    use_task_prior = cfg.align == "prior-kl" and cfg.align_prior == "task"
    if use_task_prior and tasks is None:
        raise ValueError("--align-prior task needs each sequence's task")
    metrics = metrics_path if metrics_path is not None and cfg.metrics_every > 0 else None
    if metrics is not None:
        metrics.write_text("", encoding="utf-8")  # a rebuild into the same folder starts a fresh file
    return _Pretraining(
        model,
        seqs,
        cfg,
        pad_id,
        shape,
        model_routers,
        opt,
        hooks,
        gen,
        task_ids,
        prior=al.TaskPrior(int(task_ids.max()) + 1) if use_task_prior else None,
        idf=al.idf_of(seqs, int(model.config.vocab_size)) if cfg.align == "manifold" else None,
        want_routing=shape.num_experts > 0 and (cfg.align != "none" or cfg.metrics_every > 0),
        metrics=metrics,
    )


def _pretrain_optimizer(
    model, cfg: BuildConfig, model_routers: list[torch.nn.Module]
) -> torch.optim.Optimizer:
    """AdamW with weight decay on the matrices but the embeddings; the routers in a group of their own
    (``router_lr_mult``) only when their learning rate differs."""
    router_ids = {id(p) for r in model_routers for p in r.parameters()}
    split_routers = cfg.router_lr_mult != 1.0  # their own parameter group only when their lr differs

    def group(pred) -> list:
        return [
            p
            for n, p in model.named_parameters()
            if pred(n, p) and not (split_routers and id(p) in router_ids)
        ]

    decay = group(lambda n, p: p.ndim >= 2 and "embed" not in n)
    no_decay = group(lambda n, p: not (p.ndim >= 2 and "embed" not in n))
    groups = [
        {"params": decay, "weight_decay": cfg.weight_decay, "lr_mult": 1.0},
        {"params": no_decay, "weight_decay": 0.0, "lr_mult": 1.0},
    ]
    if split_routers:
        groups.append(
            {
                "params": [p for r in model_routers for p in r.parameters()],
                "weight_decay": cfg.weight_decay,
                "lr_mult": cfg.router_lr_mult,
            }
        )
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.95))


def _pretrain_step(run: _Pretraining, step: int) -> _PretrainStep:
    """One optimiser step on the next batch of the seeded order; at a recorded step the routers'
    gradient norms are read before clipping."""
    from moe_roma.testbed import alignment as al

    cfg, model = run.cfg, run.model
    if not run.batches:
        run.batches = _epoch_batches([len(s) for s, _ in run.seqs], cfg.batch_size, run.gen)
    picked = run.batches.pop()
    ids, mask, w = (t.to(cfg.device) for t in _batch([run.seqs[i] for i in picked], run.pad_id))
    run.n_tokens += int(mask.sum())
    out = (
        model(input_ids=ids, attention_mask=mask, output_router_logits=True)
        if run.moe
        else model(input_ids=ids, attention_mask=mask)
    )
    total, done = _pretrain_loss(run, step, out, ids, mask, w, picked)
    for g in run.opt.param_groups:
        g["lr"] = run.lr_at(step) * g["lr_mult"]
    run.opt.zero_grad(set_to_none=True)
    total.backward()
    done.record = run.metrics is not None and (step + 1) % cfg.metrics_every == 0
    done.grad_norms = al.router_grad_norms(run.routers) if done.record and run.moe else None
    if cfg.router_clip > 0:
        torch.nn.utils.clip_grad_norm_([p for r in run.routers for p in r.parameters()], cfg.router_clip)
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    run.opt.step()
    run.run_loss += done.loss.item()
    return done


def _pretrain_loss(
    run: _Pretraining,
    step: int,
    out,
    ids: torch.Tensor,
    mask: torch.Tensor,
    w: torch.Tensor,
    picked: list[int],
) -> tuple[torch.Tensor, _PretrainStep]:
    """The step's total loss: the weighted language-model loss, load balancing, the alignment term
    (``--align``; the task prior is gathered over its warm-up, then frozen) and the router z-loss."""
    from transformers.models.olmoe.modeling_olmoe import load_balancing_loss_func

    from moe_roma.testbed import alignment as al

    cfg, shape = run.cfg, run.shape
    logp = torch.log_softmax(out.logits[:, :-1].float(), dim=-1)
    nll = -logp.gather(-1, ids[:, 1:, None]).squeeze(-1)
    loss = (nll * w).sum() / w.sum()
    total = loss
    aux = torch.zeros(())
    if run.moe:
        aux = load_balancing_loss_func(out.router_logits, shape.num_experts, shape.top_k, mask)
        total = total + cfg.router_aux_loss_coef * aux
    lam = al.lambda_schedule(cfg, step)
    align = None
    routing = al.routing_of(out.router_logits, mask) if run.want_routing else None
    if routing is not None:
        doc_tasks = run.task_ids[picked].to(ids.device)
        prior = run.prior
        if prior is not None and prior.frozen is None:
            if step < cfg.align_prior_steps:
                prior.add(routing, mask, doc_tasks)
            else:
                prior.freeze()
        if cfg.align == "prior-kl" and lam > 0:
            align = al.prior_kl(routing, mask, prior.frozen if prior is not None else None, doc_tasks)
        elif cfg.align == "manifold" and lam > 0:
            emb = al.tfidf_embeddings(ids, mask, run.idf)
            align = al.manifold_in_batch(routing, mask, emb, cfg.align_k, cfg.align_sigma)
        if align is not None:
            total = total + lam * align
    zl = None
    if run.moe and cfg.router_z_loss > 0:
        zl = al.z_loss(out.router_logits, mask)
        total = total + cfg.router_z_loss * zl
    return total, _PretrainStep(loss, aux, zl, align, lam, routing, mask, None, False)


def _pretrain_log(run: _Pretraining, step: int, done: _PretrainStep, log: Callable[[str], None]) -> None:
    """A recorded step's line in metrics.jsonl (with routing health and the collapse warnings new at
    this step), and every 100 steps a progress line."""
    import json

    from moe_roma.manifold.health import routing_health
    from moe_roma.testbed import alignment as al
    from moe_roma.training.monitor import warn_on_collapse

    cfg = run.cfg
    if done.record:
        row: dict = {
            "step": step + 1,
            "loss": round(done.loss.item(), 5),
            "lambda": done.lam,
            "align": None if done.align is None else round(done.align.item(), 6),
            "aux": round(done.aux.item(), 5),
            "z_loss": None if done.z_loss is None else round(done.z_loss.item(), 5),
            "lr": run.lr_at(step),
            "tokens": run.n_tokens,
            "seconds": round(time.time() - run.t0, 2),
        }
        if done.routing is not None:
            health = routing_health(al.real_tokens(done.routing, done.mask), run.shape.top_k)
            row.update(health, router_grad_norm=done.grad_norms)
            new = warn_on_collapse(health, run.shape.num_experts, run.warned, al.log)
            row["warnings"] = new
            run.warnings += [{"step": step + 1, "warning": msg} for msg in new]
            for msg in new:
                log(f"warning at step {step + 1}: {msg}")
        with open(run.metrics, "a", encoding="utf-8") as fh:  # one line per record: readable while it runs
            fh.write(json.dumps(row) + "\n")
    if (step + 1) % 100 == 0:
        log(
            f"step {step + 1}/{cfg.steps} loss {run.run_loss / 100:.4f} aux {done.aux.item():.3f} "
            f"lr {run.lr_at(step):.2e} {time.time() - run.t0:.0f}s"
        )
        run.run_loss = 0.0


def _pretrain_finish(run: _Pretraining) -> dict:
    """The jitter hooks off, the model in eval mode, and the run's figures."""
    seconds = time.time() - run.t0
    for h in run.hooks:
        h.remove()
    run.model.eval()
    return {
        "tokens": run.n_tokens,
        "seconds": round(seconds, 2),
        "tokens_per_second": round(run.n_tokens / max(seconds, 1e-9), 1),
        "collapse_warnings": run.warnings,
    }


def task_indices(labels: Sequence[str]) -> list[int]:
    """Each sequence's task as an index into the sorted task names (the task prior's rows)."""
    names = {name: i for i, name in enumerate(sorted(set(labels)))}
    return [names[x] for x in labels]


def _metrics_path(out_dir: Path, cfg) -> Path | None:
    if cfg.metrics_every <= 0:
        return None
    out_dir.mkdir(parents=True, exist_ok=True)
    return out_dir / "metrics.jsonl"


def _run_figures(model, cfg, stats: dict) -> dict:
    """What a build records beyond its config: the architecture's parameter counts and the run's figures."""
    from moe_roma.testbed.model_shapes import parameter_counts

    counts = parameter_counts(model, cfg)
    return {
        "architecture": type(model).__name__,
        "active_parameters": counts["active"],
        "pretrain_tokens_seen": stats["tokens"],
        "tokens_per_second": stats["tokens_per_second"],
        "collapse_warnings": stats["collapse_warnings"],
    }


def evaluate_splits(model, tokenizer, suite: dict[str, list[MCExample]], batch_size: int = 64) -> dict:
    """Per-split accuracy (overall and per family) of continuation scoring."""
    from moe_roma.testbed.scoring import accuracy_by_task

    return {s: accuracy_by_task(model, tokenizer, suite[s], batch_size) for s in tasks.EVAL_SPLITS}


def build_testbed(
    out_dir: str | Path, cfg: BuildConfig, log: Callable[[str], None] = print, eval_every: int = 0
) -> dict:
    """Generate the task suite, build and pre-train the model, save it to ``out_dir``."""
    torch.set_num_threads(cfg.threads)
    seed_everything(cfg.seed)
    t0 = time.time()
    suite = tasks.build_task_suite(cfg.seed, {"pretrain": cfg.pretrain_size})
    tokenizer = build_tokenizer(vocab_texts(suite))
    seqs = encode_corpus(tokenizer, suite, cfg)
    model = make_model(cfg, tokenizer).to(cfg.device)
    n_params = sum(p.numel() for p in model.parameters())
    log(f"vocab {len(tokenizer)}, {len(seqs)} pre-training sequences, {n_params / 1e6:.2f}M parameters")

    def eval_fn(step: int) -> None:
        accs = evaluate_splits(model, tokenizer, suite, cfg.eval_batch_size)
        log(f"eval at step {step}: " + ", ".join(f"{s} {a['all']:.3f}" for s, a in accs.items()))

    labels = [ex.task for ex in suite["pretrain"]] + ["facts"] * (len(seqs) - len(suite["pretrain"]))
    out_dir = Path(out_dir)
    stats = pretrain(
        model,
        seqs,
        cfg,
        tokenizer.pad_token_id,
        log,
        eval_fn,
        eval_every,
        tasks=task_indices(labels),
        metrics_path=_metrics_path(out_dir, cfg),
    )
    train_s = time.time() - t0
    accs = evaluate_splits(model, tokenizer, suite, cfg.eval_batch_size)
    for s, a in accs.items():
        log(f"{s}: {a['all']:.3f}  " + " ".join(f"{k}={v:.2f}" for k, v in a.items() if k != "all"))
    out_dir.mkdir(parents=True, exist_ok=True)
    model.to("cpu").save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    info = {
        "build_config": asdict(cfg),
        "parameters": n_params,
        **_run_figures(model, cfg, stats),
        "vocab_size": len(tokenizer),
        "pretrain_sequences": len(seqs),
        "wall_seconds": round(time.time() - t0, 1),
        "train_seconds": round(train_s, 1),
        "torch": torch.__version__,
        "accuracy": accs,
    }
    write_json_atomic(out_dir / "build_info.json", info)
    for f in out_dir.iterdir():  # atomic writes create 0600 files; the folder is meant to be shared
        if f.is_file():
            f.chmod(0o644)
    return info


# --------------------------------------------------------------------------- the downstream testbed


def corpus_config(cfg) -> object:
    """The ``CorpusConfig`` named by a ``DownstreamBuildConfig``'s corpus fields."""
    from dataclasses import fields

    from moe_roma.testbed.downstream import CorpusConfig

    return CorpusConfig(**{f.name: getattr(cfg, f.name) for f in fields(CorpusConfig)})


def encode_documents(tokenizer, docs: Sequence[str]) -> list[tuple[list[int], list[float]]]:
    """(token ids + ``<eos>``, weight 1 on every target) for each pre-training document."""
    eos = tokenizer.eos_token_id
    seqs = []
    for doc in docs:
        ids = list(tokenizer(doc, add_special_tokens=False)["input_ids"]) + [eos]
        seqs.append((ids, [1.0] * (len(ids) - 1)))
    return seqs


def measure_downstream(
    model,
    tokenizer,
    suite: dict[str, list[MCExample]],
    cfg,
    log: Callable[[str], None] = print,
    oracle: bool = True,
    splits: Sequence[str] | None = None,
    limit: int = 0,
) -> dict:
    """Base accuracy on every split (overall and per family), and oracle routing on the evaluation
    splits (``moe_roma.methods.oracle``: per-item gradient descent on the last-token routing of the last
    ``cfg.tuned_layers`` MoE layers with the item's own label), as ``roma experiment`` runs it.
    ``splits`` (default: all) and ``limit`` (> 0: each split's first items) narrow the base scoring."""
    from moe_roma.testbed.downstream import EVAL_SPLITS, SPLITS
    from moe_roma.testbed.scoring import score_summary

    t0 = time.time()
    scored = list(splits or SPLITS)
    summaries = {
        s: score_summary(model, tokenizer, suite[s][: limit or None], cfg.eval_batch_size) for s in scored
    }
    accs = {s: m["accuracy"] for s, m in summaries.items()}
    out: dict = {
        "accuracy": accs,
        "scored_sizes": {s: len(suite[s][: limit or None]) for s in scored},
        "answer_nll": {s: round(m["answer_nll"], 5) for s, m in summaries.items()},
        "choice_xent": {s: round(m["choice_xent"], 5) for s, m in summaries.items()},
        "eval_seconds": round(time.time() - t0, 1),
    }
    if "train" in accs:
        out["train_successful_share"] = accs["train"]["all"]
    for s in scored:
        a = accs[s]
        log(f"{s}: {a['all']:.3f}  " + " ".join(f"{k}={v:.2f}" for k, v in a.items() if k != "all"))
    if not oracle:
        return out
    from moe_roma.models.discovery import discover_routers

    t0 = time.time()
    info = discover_routers(model)
    layers = info.select_layers(f"last{cfg.tuned_layers}")
    out["oracle"] = {
        s: oracle_gap(model, tokenizer, suite[s], layers, cfg.oracle_steps, info, log) for s in EVAL_SPLITS
    }
    out["oracle_seconds"] = round(time.time() - t0, 1)
    return out


def oracle_gap(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    examples: list[MCExample],
    layers: list[int],
    steps: int,
    info: MoEInfo | None = None,
    log: Callable[[str], None] = lambda _: None,
) -> dict:
    """The oracle's accuracy against the base's on ``examples`` (continuation scoring): what routing can
    reach at the last prompt token of ``layers``."""
    from moe_roma.methods.oracle import oracle_routing
    from moe_roma.routing.collect import collect_routing

    store, _ = collect_routing(
        model,
        tokenizer,
        examples,
        layers=layers,
        scoring="continuation",
        batch_size=32,
        progress=False,
        info=info,
    )
    res = oracle_routing(
        model, tokenizer, store, layers=layers, steps=steps, batch_size=32, progress=False, info=info
    )
    log(res.line())
    return {
        "accuracy": res.accuracy,
        "base_accuracy": res.base_accuracy,
        "gap": res.gap,
        "n": len(res.ids),
        "n_fixed": res.n_fixed,
        "layers": res.layers,
        "steps": res.steps,
    }


def build_downstream_testbed(
    out_dir: str | Path | None,
    cfg,
    log: Callable[[str], None] = print,
    eval_every: int = 0,
    oracle: bool = True,
    splits: Sequence[str] | None = None,
    limit: int = 0,
) -> tuple[dict, object, object]:
    """Generate the downstream suite and corpus, pre-train the model, measure it, save it to ``out_dir``.

    ``cfg`` is a ``DownstreamBuildConfig``. Returns ``(build_info, model, tokenizer)``; with
    ``out_dir=None`` nothing is written (calibration probes). ``splits`` and ``limit`` narrow the
    final scoring (``measure_downstream``); the default scores every split in full.
    """
    import transformers

    from moe_roma.testbed.downstream import SPLITS, qa_format_rate

    torch.set_num_threads(cfg.threads)
    seed_everything(cfg.seed)
    t0 = time.time()
    suite, docs, labels, tokenizer, seqs = _downstream_inputs(cfg)
    model = make_model(cfg, tokenizer).to(cfg.device)
    n_params = sum(p.numel() for p in model.parameters())
    n_tokens = sum(len(s) for s, _ in seqs)
    log(
        f"vocab {len(tokenizer)}, {len(seqs)} documents ({n_tokens} tokens), {n_params / 1e6:.2f}M parameters"
    )
    prep_s = time.time() - t0
    t1 = time.time()
    stats = _pretrain_downstream(model, tokenizer, suite, seqs, labels, cfg, log, eval_every, out_dir)
    train_s = time.time() - t1
    measured = measure_downstream(
        model, tokenizer, suite, cfg, log=log, oracle=oracle, splits=splits, limit=limit
    )
    info = {
        "testbed": "downstream",
        "build_config": asdict(cfg),
        "parameters": n_params,
        **_run_figures(model, cfg, stats),
        "vocab_size": len(tokenizer),
        "pretrain_documents": len(seqs),
        "pretrain_tokens": n_tokens,
        "qa_format_rate": qa_format_rate(docs),
        "split_sizes": {s: len(suite[s]) for s in SPLITS},
        "prepare_seconds": round(prep_s, 1),
        "train_seconds": round(train_s, 1),
        **measured,
        "wall_seconds": round(time.time() - t0, 1),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }
    if out_dir is not None:
        _save_build(Path(out_dir), model, tokenizer, info)
    return info, model, tokenizer


def _downstream_inputs(cfg) -> tuple:
    """The suite, the pre-training corpus and its task labels, and the tokenizer and encoded corpus.

    The tokenizer is trained on the corpus and on every split's contexts and choices, so that
    scoring never meets an unknown word.
    """
    from moe_roma.testbed.downstream import (
        SPLITS,
        build_downstream_suite,
        pretrain_corpus,
        pretrain_corpus_tasks,
    )

    suite = build_downstream_suite(cfg.seed)
    docs = pretrain_corpus(cfg.seed, corpus_config(cfg))
    labels = (
        pretrain_corpus_tasks(cfg.seed, corpus_config(cfg))
        if cfg.align != "none"
        else ["general"] * len(docs)
    )
    texts = list(docs)
    for s in SPLITS:
        for ex in suite[s]:
            texts.append(continuation_context(ex))
            texts.extend(ex.choices)
    tokenizer = build_tokenizer(texts)
    seqs = encode_documents(tokenizer, docs)
    return suite, docs, labels, tokenizer, seqs


def _pretrain_downstream(
    model, tokenizer, suite, seqs, labels, cfg, log: Callable[[str], None], eval_every: int, out_dir
) -> dict:
    """Pre-train ``model`` on ``seqs``, scoring the suite every ``eval_every`` steps; its stats."""

    def eval_fn(step: int) -> None:
        m = measure_downstream(model, tokenizer, suite, cfg, log=lambda _m: None, oracle=False)
        log(f"eval at step {step}: " + ", ".join(f"{s} {a['all']:.3f}" for s, a in m["accuracy"].items()))

    if out_dir is not None:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
    return pretrain(
        model,
        seqs,
        cfg,
        tokenizer.pad_token_id,
        log,
        eval_fn,
        eval_every,
        tasks=task_indices(labels),
        metrics_path=None if out_dir is None else _metrics_path(Path(out_dir), cfg),
    )


def _save_build(out_dir: Path, model, tokenizer, info: dict) -> None:
    """The model folder: weights (from the CPU), tokenizer and build_info.json, all readable by anyone."""
    out_dir.mkdir(parents=True, exist_ok=True)
    model.to("cpu").save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    write_json_atomic(out_dir / "build_info.json", info)
    for f in out_dir.iterdir():
        if f.is_file():
            f.chmod(0o644)
