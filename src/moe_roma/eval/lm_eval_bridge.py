"""Export multiple-choice data as an lm-evaluation-harness task that scores exactly like ``roma eval``.

The task reads a JSONL file written next to its YAML, where every prompt is already rendered
by our own templates: ``doc_to_text: query`` (the context), ``doc_to_choice: choices`` and
``doc_to_target: gold``. Naming fields instead of writing Jinja templates means lm-evaluation-
harness sees the very strings we score, whitespace and all.

Partial-scoring examples (WinoGrande) become a ``multiple_input`` task: ``doc_to_text: gold``
(an integer), the context options as choices and the shared continuation as the target. A file
that mixes both kinds gets one task per kind and a group that averages them by size.

Letter scoring exports the letter prompt with ``A``, ``B``, ... as the choices: the harness then
scores `` A`` after ``Answer:``, which is the next-token log-probability ``roma eval`` compares
whenever `` A`` is a single token (true of the usual BPE and SentencePiece vocabularies).

>>> from moe_roma.data.example import MCExample
>>> lm_eval_docs([MCExample("q1", "2 + 2 = ?", ("3", "4"), 1)], "continuation")
[{'id': 'q1', 'task': 'default', 'query': 'Question: 2 + 2 = ?\\nAnswer:', 'choices': ['3', '4'], 'gold': 1}]
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from moe_roma.data.example import MCExample
from moe_roma.data.prompts import (
    continuation_context,
    letter_prompt,
)
from moe_roma.io.atomic import atomic_path
from moe_roma.io.errors import RomaError
from moe_roma.scoring import DEFAULT_SCORING, SCORINGS
from moe_roma.scoring.continuation import TARGET_DELIMITER

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
METRICS = ("acc", "acc_norm")


def check_task_name(name: str) -> str:
    """A task name lm-evaluation-harness can use on its command line and as a file name."""
    if not _NAME.fullmatch(name):
        raise RomaError(
            f"task name {name!r} must be letters, digits, '_', '-' or '.', starting with a letter or digit"
        )
    return name


def default_task_name(data_path: str | Path) -> str:
    """``roma_<file stem>``: the prefix keeps it clear of lm-evaluation-harness's own task names.

    >>> default_task_name("data/arc-challenge test.jsonl")
    'roma_arc-challenge_test'
    """
    stem = Path(data_path).stem or Path(data_path).name
    return "roma_" + re.sub(r"[^A-Za-z0-9_.-]+", "_", stem).strip("_.-")


def lm_eval_doc(
    example: MCExample, scoring: str = DEFAULT_SCORING, template: str | None = None
) -> dict[str, Any]:
    """One JSONL row of the exported task for ``example``."""
    base = {"id": example.id, "task": example.task}
    if scoring == "letter":
        query = letter_prompt(example, template)
        return {**base, "query": query, "choices": list(example.letters), "gold": example.answer}
    if example.continuation is not None:
        return {
            **base,
            "choices": list(example.choices),
            "continuation": example.continuation,
            "gold": example.answer,
        }
    query = continuation_context(example, template)
    return {**base, "query": query, "choices": list(example.choices), "gold": example.answer}


def lm_eval_docs(
    examples: Sequence[MCExample], scoring: str = DEFAULT_SCORING, template: str | None = None
) -> list[dict[str, Any]]:
    """The JSONL rows for ``examples`` (see ``lm_eval_doc``)."""
    if scoring not in SCORINGS:
        raise RomaError(f"unknown scoring {scoring!r}; choose one of: {', '.join(SCORINGS)}")
    return [lm_eval_doc(ex, scoring, template) for ex in examples]


def task_config(name: str, data_file: Path, partial: bool = False) -> dict[str, Any]:
    """The task YAML as a dict; ``data_file`` must be absolute (lm-eval resolves it from its cwd)."""
    config: dict[str, Any] = {
        "task": name,
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"test": str(data_file)}},
        "test_split": "test",
        "output_type": "multiple_choice",
        # Field names, not templates: lm-eval returns doc[field] verbatim.
        "doc_to_text": "gold" if partial else "query",
        "doc_to_choice": "choices",
        "doc_to_target": "continuation" if partial else "gold",
        "target_delimiter": TARGET_DELIMITER,
        "metric_list": [{"metric": m, "aggregation": "mean", "higher_is_better": True} for m in METRICS],
        "metadata": {"version": 1.0},
    }
    return config


def group_config(name: str, tasks: list[str]) -> dict[str, Any]:
    """A group averaging its tasks' acc and acc_norm weighted by size (= over all items)."""
    return {
        "group": name,
        "task": tasks,
        "aggregate_metric_list": [
            {"metric": m, "aggregation": "mean", "weight_by_size": True} for m in METRICS
        ],
        "metadata": {"version": 1.0},
    }


@dataclass
class ExportedTask:
    """What ``write_lm_eval_task`` wrote: the name to pass to ``--tasks`` and the files."""

    name: str
    yaml_files: list[Path] = field(default_factory=list)
    data_files: list[Path] = field(default_factory=list)
    n: int = 0

    def command(self, model: str = "MODEL") -> str:
        folder = self.yaml_files[0].parent if self.yaml_files else Path(".")
        return (
            f"lm_eval --model hf --model_args pretrained={model} --include_path {folder} --tasks {self.name}"
        )


def task_files(out_dir: str | Path, name: str) -> list[Path]:
    """Every file ``write_lm_eval_task`` may write for task ``name`` (to compare with the inputs first)."""
    out = Path(out_dir)
    stems = (name, f"{name}_choice", f"{name}_partial")
    return [out / f"{stem}.{ext}" for stem in stems for ext in ("jsonl", "yaml")]


def _write_jsonl(path: Path, rows: list[dict[str, Any]], stack: contextlib.ExitStack) -> None:
    with open(stack.enter_context(atomic_path(path)), "w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")


def _write_yaml(path: Path, config: dict[str, Any], stack: contextlib.ExitStack) -> None:
    text = yaml.safe_dump(config, sort_keys=False, allow_unicode=True, width=10_000)
    stack.enter_context(atomic_path(path)).write_text(text, encoding="utf-8")


def write_lm_eval_task(
    examples: Sequence[MCExample],
    out_dir: str | Path,
    name: str,
    *,
    scoring: str = DEFAULT_SCORING,
    template: str | None = None,
) -> ExportedTask:
    """Write ``<out_dir>/<name>.yaml`` and ``<name>.jsonl`` for
    ``lm_eval --include_path out_dir --tasks name``.

    Every example is exported; a mix of partial-scoring and ordinary examples becomes
    ``<name>_choice`` + ``<name>_partial`` under a group called ``name``.

    >>> import tempfile
    >>> from moe_roma.data.example import MCExample
    >>> out = write_lm_eval_task([MCExample("q1", "2 + 2 = ?", ("3", "4"), 1)], tempfile.mkdtemp(), "demo")
    >>> [p.name for p in out.yaml_files + out.data_files]
    ['demo.yaml', 'demo.jsonl']
    """
    check_task_name(name)
    if not examples:
        raise RomaError("no examples to export")
    rows = lm_eval_docs(examples, scoring, template)
    out = Path(out_dir).expanduser().resolve()
    if out.exists() and not out.is_dir():
        raise RomaError(f"{out}: exists and is not a folder")
    partial = [r for r in rows if "continuation" in r]
    plain = [r for r in rows if "continuation" not in r]
    parts = (
        [(name, rows, bool(partial))]
        if not (partial and plain)
        else [
            (f"{name}_choice", plain, False),
            (f"{name}_partial", partial, True),
        ]
    )
    exported = ExportedTask(name, n=len(rows))
    with contextlib.ExitStack() as stack:  # every file is renamed into place only when all are complete
        for task_name, task_rows, is_partial in parts:
            data_file = out / f"{task_name}.jsonl"
            _write_jsonl(data_file, task_rows, stack)
            yaml_file = out / f"{task_name}.yaml"
            _write_yaml(yaml_file, task_config(task_name, data_file, is_partial), stack)
            exported.data_files.append(data_file)
            exported.yaml_files.append(yaml_file)
        if len(parts) > 1:
            group_file = out / f"{name}.yaml"
            _write_yaml(group_file, group_config(name, [p[0] for p in parts]), stack)
            exported.yaml_files.insert(0, group_file)
    return exported
