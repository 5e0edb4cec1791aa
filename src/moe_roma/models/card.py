"""The model card (``README.md``) of a router folder or an exported model, through ``huggingface_hub``.

Front matter (``ModelCardData``): ``base_model`` (when the base is a hub id), ``library_name``,
tags, the training datasets (hub ids, from ``hf:`` sources) and a ``model-index`` with one
``EvalResult`` per metric of every ``roma eval --json`` report passed in. The text has the training
configuration and seed, and three sections: expected generalisation behaviour (the
evaluation splits, with the base model's figures where the report has them), failure modes
(routing collapse seen during training, splits and tasks where accuracy fell) and intended domains
(the training tasks). Everything comes from plain dicts (the router config, eval reports, lines
about collapse), so this module needs no training or evaluation code.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from moe_roma import __version__
from moe_roma.io.atomic import write_text_atomic

CARD_NAME = "README.md"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def hub_id(name: str | None) -> str | None:
    """``name`` when it reads as a hub repository id (``org/name``) and is not a folder on this machine."""
    if not name or not _HUB_ID.match(name) or Path(name).exists():
        return None
    return name


def dataset_id(source: str | None) -> str | None:
    """The hub dataset id of an ``hf:NAME[:CONFIG][:SPLIT]`` source, else None."""
    if not source or not str(source).startswith("hf:"):
        return None
    return hub_id(str(source)[3:].split(":")[0])


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def _eval_name(report: dict) -> tuple[str, str | None, str | None, str]:
    """(dataset type, config, split, readable name) of an eval report's data source."""
    data = str(report.get("data") or "data")
    if data.startswith("hf:"):
        parts = (data[3:].split(":") + [None, None])[:3]
        name, config, split = parts[0], parts[1] or None, parts[2] or None
        if config and not split and config.split("[")[0] in ("train", "validation", "test", "dev"):
            config, split = None, config
        return name, config, split, data[3:]
    return Path(data).stem or data, None, None, Path(data).name or data


def eval_results(reports: Sequence[dict]) -> list:
    """``huggingface_hub.EvalResult`` entries (acc, and acc_norm for continuation scoring) of each report."""
    from huggingface_hub import EvalResult

    out = []
    for report in reports:
        dtype, config, split, name = _eval_name(report)
        for metric in ("acc", "acc_norm"):
            value = report.get(metric)
            if value is None:
                continue
            out.append(
                EvalResult(
                    task_type="multiple-choice",
                    task_name="Multiple choice",
                    dataset_type=dtype,
                    dataset_name=name,
                    dataset_config=config,
                    dataset_split=split,
                    metric_type="accuracy",
                    metric_name=metric,
                    metric_value=round(float(value), 4),
                )
            )
    return out


def _generalisation(reports: Sequence[dict]) -> list[str]:
    if not reports:
        return [
            "No evaluation was passed in (`--eval-json`): run `roma eval --routers ... --compare-base --json "
            "FILE` on in-distribution and held-out data and write the card again with those files."
        ]
    lines = [
        "| evaluation data | scoring | n | base acc | tuned acc | change |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in reports:
        base = (r.get("base") or {}).get("acc")
        change = "-" if base is None or r.get("acc") is None else f"{100 * (r['acc'] - base):+.1f} points"
        lines.append(
            f"| {_eval_name(r)[3]} | {r.get('scoring', '-')} | {r.get('n', '-')} | {_pct(base)} | "
            f"{_pct(r.get('acc'))} | {change} |"
        )
    lines += [
        "",
        "Figures are from `roma eval` on the data named above; gains on the training tasks do not "
        "promise gains on unrelated tasks, so judge transfer from held-out splits.",
    ]
    return lines


def _fell(reports: Sequence[dict]) -> list[str]:
    """Each split, and each task within it, where the tuned model is less accurate than the base."""
    out = []
    for r in reports:
        base = r.get("base") or {}
        name = _eval_name(r)[3]
        if base.get("acc") is not None and r.get("acc") is not None and r["acc"] < base["acc"]:
            out.append(f"- accuracy fell on {name}: {_pct(base['acc'])} -> {_pct(r['acc'])}")
        for task, fig in (r.get("tasks") or {}).items():
            before = (base.get("tasks") or {}).get(task, {}).get("acc")
            if (
                before is not None
                and fig.get("acc") is not None
                and fig["acc"] < before
                and len(r.get("tasks")) > 1
            ):
                out.append(f"- accuracy fell on task {task} of {name}: {_pct(before)} -> {_pct(fig['acc'])}")
    return out


def card_text(config: dict, reports: Sequence[dict], collapse: Sequence[str], kind: str) -> str:
    """The card's text: what the folder is, how it was trained, how it generalises, how it fails, and
    what it is for."""
    lines = _training_section(config, kind)
    lines += [
        "",
        "## Expected generalisation behaviour",
        "",
        *_generalisation(reports),
        "",
        "## Failure modes",
        "",
    ]
    failures = [f"- routing collapse during training: {c}" for c in collapse] + _fell(reports)
    lines += failures or [
        "- none seen: no routing collapse was logged in training, and accuracy fell on no "
        "evaluation split or task passed in."
    ]
    lines += [
        "- router post-training moves routing towards the training tasks; on inputs far from them (other "
        "languages, long generation, code) the tuned routers are untested and may be worse than the base.",
        "",
        "## Intended domains",
        "",
    ]
    tasks = config.get("train_tasks") or {}
    if tasks:
        lines.append("Multiple-choice questions like the training tasks:")
        lines += [f"- {t} ({n} examples)" for t, n in sorted(tasks.items(), key=lambda kv: (-kv[1], kv[0]))]
    else:
        lines.append("The training tasks were not recorded; use it for questions like the training data's.")
    return "\n".join(lines) + "\n"


def _training_section(config: dict, kind: str) -> list[str]:
    """The title, what the folder holds and how to load it, and the training configuration."""
    base = config.get("base_model") or {}
    name = base.get("name_or_path") or "the base model"
    method = config.get("method") or "roma"
    layers = config.get("tuned_layers") or []
    what = (
        "A full model folder with the tuned routers merged in; it loads with "
        "`AutoModelForCausalLM.from_pretrained` and no moe-roma code."
        if kind == "merged"
        else "A router checkpoint: only the tuned router tensors (`router_weights.safetensors`) and their "
        "description (`router_config.json`). Load it into the base model with `roma apply` / `roma eval "
        "--routers`, or merge it with `roma export`."
    )
    lines = [
        f"# {method} routers for {name}",
        "",
        f"{what} Only the routers of layers {layers} of {name} were trained ({config.get('num_experts')} "
        f"experts, {config.get('gate_function', 'softmax')} gate); every other weight is the base model's. "
        f"Made with moe-roma {config.get('package_version', __version__)}.",
        "",
        "## Training configuration",
        "",
        f"- method: {method}",
        f"- seed: {config.get('seed', '-')}",
        f"- tuned layers: {layers}",
        f"- training examples: {config.get('n_train', '-')} ({config.get('n_successful', '-')} answered "
        "correctly by the base model: the successful set)",
        f"- training data: {config.get('train_data') or '-'}",
        f"- steps: {config.get('steps', '-')}, {config.get('train_seconds', '-')} s on "
        f"{config.get('world_size', 1)} process(es)",
    ]
    imported = config.get("imported_from")
    if imported:
        lines.append(
            f"- imported from the public RoMA code's checkpoint {imported.get('checkpoint')} (SHA-256 "
            f"{imported.get('checkpoint_sha256')}); its training settings are not recorded in that file"
        )
    hyper = config.get("hyperparameters")
    if hyper:
        lines += ["", "```json", json.dumps(hyper, indent=2, sort_keys=True), "```"]
    return lines


def build_model_card(
    config: dict,
    reports: Sequence[dict] = (),
    collapse: Sequence[str] = (),
    kind: Literal["routers", "merged"] = "routers",
) -> Any:
    """The ``huggingface_hub.ModelCard`` of a router folder (``kind="routers"``) or a merged model."""
    from huggingface_hub import ModelCard, ModelCardData

    base = (config.get("base_model") or {}).get("name_or_path")
    datasets = sorted(
        {d for d in [dataset_id(s) for s in (config.get("train_sources") or [config.get("train_data")])] if d}
    )
    tags = ["moe-roma", "mixture-of-experts", "router-tuning", str(config.get("method") or "roma")]
    family = config.get("family")
    if family:
        tags.append(str(family))
    data = ModelCardData(
        base_model=hub_id(base),
        library_name="transformers" if kind == "merged" else "moe-roma",
        tags=tags,
        datasets=datasets or None,
        eval_results=eval_results(reports) or None,
        model_name=f"{config.get('method') or 'roma'} routers for {base}",
    )
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n{card_text(config, reports, collapse, kind)}")


def write_model_card(card: Any, folder: str | Path) -> Path:
    path = Path(folder) / CARD_NAME
    write_text_atomic(path, str(card))
    return path
