"""``roma eval`` as a Python call: load data and model, apply tuned routers, score, compare with the base.

Every check that can fail runs before the first forward pass: the data is loaded and validated,
the template is tried, the router checkpoint is read and matched against the base model. When
both models are wanted, the base model is loaded once: its router tensors are kept aside, the
tuned ones are loaded over them, and the two sets are swapped in turn (routers are tiny; a
second copy of a 30B model is not).

>>> from moe_roma.eval.evaluate import EvalConfig, run_eval  # doctest: +SKIP
>>> report = run_eval(EvalConfig(model="path/to/olmoe", data="arc.jsonl", routers="runs/roma",
...                              compare_base=True))  # doctest: +SKIP
>>> print("\\n".join(report.lines()))  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from moe_roma import __version__
from moe_roma.data.example import MCExample
from moe_roma.data.presets import FieldMap
from moe_roma.data.prompts import (
    DEFAULT_CONTINUATION_TEMPLATE,
    DEFAULT_LETTER_TEMPLATE,
    check_template_fields,
    continuation_context,
    letter_prompt,
)
from moe_roma.distributed.parallel import evaluate_parallel
from moe_roma.io.atomic import atomic_path, write_json
from moe_roma.io.errors import RomaError
from moe_roma.scoring import DEFAULT_SCORING, SCORINGS
from moe_roma.scoring.checks import warn_if_near_chance, warn_on_context, warn_on_unknown_tokens
from moe_roma.scoring.common import context_length
from moe_roma.scoring.results import EvalResult, ItemResult
from moe_roma.scoring.stats import compare_paired

REPORT_FORMAT_VERSION = 1


@dataclass
class EvalConfig:
    """Everything ``roma eval`` takes; the same names as its options."""

    model: str
    data: str
    routers: str | None = None
    format: str | None = None
    scoring: str = DEFAULT_SCORING
    batch_size: int = 8
    limit: int | None = None
    max_length: int | None = None  # default: the model's context length, as lm-evaluation-harness
    template: str | None = None
    dtype: str = "auto"
    device: str | None = None
    device_map: str | None = None  # "auto": accelerate spreads the model over every visible GPU
    attn_implementation: str | None = None
    compare_base: bool = False
    progress: bool = True
    preset: str | None = None  # Hugging Face datasets sources: column mapping by name ...
    fields: FieldMap | None = None  # ... or by column names
    trust_remote_code: bool = False  # --trust-remote-code: let the model folder run its own code

    def check(self) -> None:
        """Refuse inconsistent options before any work."""
        if self.scoring not in SCORINGS:
            raise RomaError(f"unknown scoring {self.scoring!r}; choose one of: {', '.join(SCORINGS)}")
        if self.compare_base and not self.routers:
            raise RomaError(
                "--compare-base needs --routers (the tuned routers to compare the base model with)"
            )
        for name, value in (
            ("--batch-size", self.batch_size),
            ("--limit", self.limit),
            ("--max-length", self.max_length),
        ):
            if value is not None and value < 1:
                raise RomaError(f"{name} must be at least 1, got {value}")


def check_template(template: str | None, scoring: str, example: MCExample) -> None:
    """Render the template once, so a typo fails now with a clear sentence, not mid-run."""
    if template is None:
        return
    check_template_fields(template, scoring)
    try:
        if scoring == "letter":
            letter_prompt(example, template)
        else:
            continuation_context(example, template)
    except (KeyError, IndexError, ValueError) as exc:
        raise RomaError(
            f"template {template!r} cannot be filled ({type(exc).__name__}: {exc}); "
            "it may use only {question} and {choices}"
        ) from None


def load_eval_data(
    data: str,
    format: str | None = None,
    limit: int | None = None,
    preset: str | None = None,
    fields: FieldMap | None = None,
) -> tuple[list[MCExample], str]:
    """The examples to score (the first ``limit`` of them) and the format they were read as."""
    from moe_roma.data.loaders import detect_format, load_examples, normalize_format

    name = normalize_format(format, data) if format is not None else None
    examples = load_examples(data, format=name, preset=preset, fields=fields)
    if examples and "preset" in examples[0].meta:
        name = f"datasets[{examples[0].meta['preset']}]"
    name = name or detect_format(data)
    if not examples:
        raise RomaError(f"{data}: no examples to evaluate")
    return (examples[:limit] if limit is not None else examples), name


# --- swapping router tensors ----------------------------------------------------------------


# --- comparison ------------------------------------------------------------------------------


def compare_results(base: EvalResult, tuned: EvalResult) -> dict[str, Any]:
    """Paired comparison of two runs over the same examples: overall and per task, acc and acc_norm.

    Items are matched by position and id; only items scored in both runs count.
    """
    pairs = [(b, t) for b, t in zip(base.items, tuned.items) if b.scored and t.scored]
    if len(base.items) != len(tuned.items) or any(b.id != t.id for b, t in zip(base.items, tuned.items)):
        raise RomaError("the two runs did not score the same examples; cannot compare them")
    metrics = ["acc"] + (["acc_norm"] if base.scoring == "continuation" else [])

    def compare(subset: Sequence[tuple[ItemResult, ItemResult]]) -> dict[str, Any]:
        out = {}
        for m in metrics:
            flags = [
                (b.correct, t.correct) if m == "acc" else (bool(b.correct_norm), bool(t.correct_norm))
                for b, t in subset
            ]
            out[m] = compare_paired([x for x, _ in flags], [y for _, y in flags]).to_dict()
        return out

    tasks: dict[str, list[tuple[ItemResult, ItemResult]]] = {}
    for b, t in pairs:
        tasks.setdefault(b.task, []).append((b, t))
    return {**compare(pairs), "tasks": {name: compare(sub) for name, sub in sorted(tasks.items())}}


def comparison_lines(comparison: dict[str, Any]) -> list[str]:
    lines = []
    for metric in ("acc", "acc_norm"):
        c = comparison.get(metric)
        if not c:
            continue
        if c["diff"] is None:
            lines.append(f"{metric}: no items scored by both models")
            continue
        lo, hi = c["diff_ci"]
        lines.append(
            f"{metric}: base {c['base_acc']:.4f} -> tuned {c['tuned_acc']:.4f}, diff {c['diff']:+.4f} "
            f"[{lo:+.4f}, {hi:+.4f}], McNemar p={c['mcnemar_p']:.4g} "
            f"(fixed {c['only_tuned_correct']}, broke {c['only_base_correct']}, n={c['n']})"
        )
    return lines


# --- the run ---------------------------------------------------------------------------------


@dataclass
class EvalReport:
    """The outcome of ``run_eval``: the evaluated model's result, and the base model's when compared."""

    config: EvalConfig
    label: str  # "tuned" with --routers, else "base"
    result: EvalResult
    base: EvalResult | None
    data_format: str
    max_length: int
    model_identity: dict[str, Any]
    routers_sha256: str | None = None  # the evaluated routers' weights (a card checks its reports by it)

    @property
    def comparison(self) -> dict[str, Any] | None:
        return None if self.base is None else compare_results(self.base, self.result)

    def to_json(self) -> dict[str, Any]:
        """The report written by ``--json``: n, acc, acc_ci, acc_norm, tasks, unusable, timing, ..."""
        cfg = self.config
        out: dict[str, Any] = {
            "format_version": REPORT_FORMAT_VERSION,
            "package_version": __version__,
            "model": cfg.model,
            "model_identity": self.model_identity,
            "routers": cfg.routers,
            "routers_sha256": self.routers_sha256,
            "evaluated": self.label,
            "data": cfg.data,
            "data_format": self.data_format,
            "limit": cfg.limit,
            "template": cfg.template
            or (DEFAULT_LETTER_TEMPLATE if cfg.scoring == "letter" else DEFAULT_CONTINUATION_TEMPLATE),
            "batch_size": cfg.batch_size,
            "max_length": self.max_length,
            "dtype": cfg.dtype,
            "attn_implementation": cfg.attn_implementation,
            **self.result.summary(),
        }
        if self.base is not None:
            out["base"] = self.base.summary()
            out["comparison"] = self.comparison
        return out

    def lines(self) -> list[str]:
        """What ``roma eval`` prints: a summary line per model, per-task figures, the comparison."""
        runs = ([("base", self.base)] if self.base is not None else []) + [(self.label, self.result)]
        width = max(len(label) for label, _ in runs)
        lines = [r.line(label.ljust(width)) for label, r in runs]
        tasks = self.result.by_task()
        if len(tasks) > 1:
            lines.append("per task:")
            for label, r in runs:
                summary = r.summary()["tasks"]
                for name, fig in summary.items():
                    norm = f"  acc_norm {fig['acc_norm']:.4f}" if fig.get("acc_norm") is not None else ""
                    lines.append(f"  {label.ljust(width)}  {name}: acc {fig['acc']:.4f}{norm}  n={fig['n']}")
        # Both runs see the same inputs, so their unusable items are normally the same: list once.
        seen: set[tuple[str, str]] = set()
        unusable = []
        for r_label, r in runs:
            for u in r.unusable:
                if (u.id, u.reason) not in seen:
                    seen.add((u.id, u.reason))
                    unusable.append((r_label, u))
        show = 5
        for r_label, u in unusable[:show]:
            tag = f" ({r_label})" if len(runs) > 1 and any(lab != r_label for lab, _ in unusable) else ""
            lines.append(f"unusable{tag}: {u.id} [{u.task}]: {u.reason}")
        if len(unusable) > show:
            lines.append(f"unusable: ... and {len(unusable) - show} more (listed in the --json report)")
        if self.base is not None:
            lines.extend(comparison_lines(self.comparison or {}))
        return lines

    def prediction_rows(self) -> list[dict[str, Any]]:
        runs = ([("base", self.base)] if self.base is not None else []) + [(self.label, self.result)]
        return [{"model": label, **it.to_dict()} for label, r in runs for it in r.items]


def write_report(
    report: EvalReport, json_path: str | Path | None, predictions_path: str | Path | None
) -> None:
    """Write the JSON report and the per-item predictions (JSONL), atomically: both or neither."""
    with contextlib.ExitStack() as stack:  # renamed into place only once every file is complete
        if json_path is not None:
            write_json(stack.enter_context(atomic_path(json_path)), report.to_json())
        if predictions_path is not None:
            with open(stack.enter_context(atomic_path(predictions_path)), "w", encoding="utf-8") as fh:
                for row in report.prediction_rows():
                    fh.write(json.dumps(row, ensure_ascii=False, allow_nan=False) + "\n")


def _load(config: EvalConfig) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    from transformers.utils import logging as hf_logging

    from moe_roma.models.loading import load_model

    # --no-progress silences every bar, transformers' weight-loading bar included.
    quiet = not config.progress and hf_logging.is_progress_bar_enabled()
    if quiet:
        hf_logging.disable_progress_bar()
    try:
        return load_model(
            config.model,
            dtype=config.dtype,
            device=config.device,
            attn_implementation=config.attn_implementation,
            device_map=config.device_map,
            trust_remote_code=config.trust_remote_code,
        )
    finally:
        if quiet:
            hf_logging.enable_progress_bar()


def run_eval(
    config: EvalConfig,
    model: PreTrainedModel | None = None,
    tokenizer: PreTrainedTokenizerBase | None = None,
) -> EvalReport:
    """Evaluate ``config.model`` (with ``config.routers`` applied) on ``config.data``.

    Pass ``model`` and ``tokenizer`` to evaluate objects already in memory (``config.model``
    is then only recorded). With ``compare_base``, the base model is evaluated too, on the same
    items, and ``report.comparison`` holds the paired comparison.
    """
    config.check()
    examples, data_format = load_eval_data(
        config.data, config.format, config.limit, config.preset, config.fields
    )
    check_template(config.template, config.scoring, examples[0])
    routers_sha256 = _routers_sha256(config)
    if model is None or tokenizer is None:
        model, tokenizer = _load(config)
    from moe_roma.models.loading import model_identity

    identity = model_identity(model)
    context = context_length(model, tokenizer)
    max_length = config.max_length or context
    warn_on_context(config.max_length, context)
    warn_on_unknown_tokens(tokenizer, examples)

    def run() -> EvalResult:
        return _score(config, model, tokenizer, examples, max_length)

    if not config.routers:
        return EvalReport(config, "base", run(), None, data_format, max_length, identity)
    base = _apply_routers(config, model, run)
    return EvalReport(config, "tuned", run(), base, data_format, max_length, identity, routers_sha256)


def _routers_sha256(config: EvalConfig) -> str | None:
    """The fingerprint of ``config.routers`` (None without): a broken folder fails before the model loads."""
    if not config.routers:
        return None
    from moe_roma.models.checkpoint import load_router_checkpoint, routers_fingerprint

    router_config, _ = load_router_checkpoint(config.routers)
    return routers_fingerprint(config.routers, router_config)


def _score(
    config: EvalConfig,
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    examples: list[MCExample],
    max_length: int,
) -> EvalResult:
    """Score ``examples`` (each process of a torchrun job its share); refuse a run that scored none."""
    result = evaluate_parallel(
        model,
        tokenizer,
        examples,
        scoring=config.scoring,
        batch_size=config.batch_size,
        max_length=max_length,
        template=config.template,
        progress=config.progress,
    )
    if result.n == 0:
        first = result.unusable[0].reason if result.unusable else "no reason recorded"
        raise RomaError(
            f"{config.data}: none of the {len(examples)} examples could be scored (first: {first})"
        )
    warn_if_near_chance(
        [it.correct for it in result.scored_items],
        [len(ex.choices) for ex, it in zip(examples, result.items) if it.scored],
        config.scoring,
        "accuracy",
    )
    return result


def _apply_routers(
    config: EvalConfig, model: PreTrainedModel, run: Callable[[], EvalResult]
) -> EvalResult | None:
    """Apply ``config.routers`` to ``model``; with ``compare_base``, first ``run`` on the base routers
    (returned; None without). The model leaves with the tuned routers either way."""
    from moe_roma.models.checkpoint import apply_router_checkpoint, restore_routers, router_snapshot

    base_state = router_snapshot(model) if config.compare_base else None
    apply_router_checkpoint(model, config.routers)  # refuses a checkpoint of another base model
    if base_state is None:
        return None
    tuned_state = router_snapshot(model)
    restore_routers(model, base_state)
    try:
        return run()
    finally:
        restore_routers(model, tuned_state)
