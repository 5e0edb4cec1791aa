"""Column mappings for Hugging Face ``datasets``: the paper's training sets and the common benchmarks.

A preset turns one row of a hub dataset (a dict of its columns) into the parts of an ``MCExample``.
Each names the columns that identify it (``columns``), so that ``detect_preset`` can choose it from
a dataset's column names; the one with the most matching columns wins (SuperGLUE BoolQ has
``idx``/``label`` where ``google/boolq`` has ``answer``). ``FieldMap`` is the same for any other
schema, from ``--question-field``/``--choices-field``/``--answer-field``/``--context-field``.

Where a published schema always puts the right answer in the same place (SciQ's ``correct_answer``
after three distractors), the preset places it at a position chosen by a hash of the question, so
that letter scoring and training never learn "always D"; the same row always gets the same order.

>>> PRESETS["piqa"].convert({"goal": "Dry hair", "sol1": "towel", "sol2": "oven", "label": 0}, Where("x"))
... # doctest: +NORMALIZE_WHITESPACE
Row(question='Dry hair', choices=['towel', 'oven'], answer=0, id=None, task='piqa',
    continuation=None, meta={})
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from moe_roma.data.example import LETTERS
from moe_roma.data.formats._common import Where, kind, show
from moe_roma.io.errors import DataError


@dataclass
class Row:
    """What a preset reads from one row; the adapter validates it and builds the ``MCExample``."""

    question: str
    choices: list[str]
    answer: int
    id: str | None = None
    task: str | None = None
    continuation: str | None = None
    meta: dict = field(default_factory=dict)


Convert = Callable[[dict, Where], Row]


@dataclass(frozen=True)
class Preset:
    name: str
    hub_ids: tuple[str, ...]  # where the schema lives on the hub (documentation and the recipe)
    columns: frozenset[str]  # the columns that identify the schema (detection)
    convert: Convert
    description: str


def _text(row: dict, key: str, where: Where) -> str:
    if key not in row:
        raise where.error(f"missing column {key!r} (columns: {show(sorted(row), 80)})")
    value = row[key]
    if not isinstance(value, str):
        raise where.error(f"column {key!r} must be text, got {kind(value)} {show(value)}")
    return value


def _texts(row: dict, key: str, where: Where) -> list[str]:
    value = row.get(key)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise where.error(f"column {key!r} must be a list of texts, got {kind(value)} {show(value)}")
    return value


def _int(value: Any, what: str, where: Where) -> int:
    """An integer label; digit strings ("2", SocialIQA's "1\\n") are read too; -1 and "" mean no label."""
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, int):
        if value in ("", None):
            raise where.error(f"{what} is empty: no answer label (a test split without labels?)")
        raise where.error(f"{what} must be an integer label, got {kind(value)} {show(value)}")
    if value < 0:
        raise where.error(f"{what} is {value}: no answer label (a test split without labels?)")
    return value


def _labelled(
    row: dict, where: Where, choices_key: str = "choices", key: str = "answerKey"
) -> tuple[list[str], int]:
    """ARC / OpenBookQA / CommonsenseQA: ``choices = {text: [...], label: [...]}`` and an answer key
    that is one of the labels ("A".."E", or "1".."4" in some ARC rows)."""
    choices = row.get(choices_key)
    if not isinstance(choices, dict) or "text" not in choices or "label" not in choices:
        raise where.error(
            f"column {choices_key!r} must be {{'text': [...], 'label': [...]}}, got {show(choices)}"
        )
    texts, labels = _texts(choices, "text", where), _texts(choices, "label", where)
    if len(texts) != len(labels):
        raise where.error(f"{choices_key!r} has {len(texts)} texts but {len(labels)} labels")
    answer = _text(row, key, where).strip()
    if not answer:
        raise where.error(f"{key!r} is empty: no answer label (a test split without labels?)")
    if answer not in labels:
        raise where.error(f"{key!r} is {show(answer)}, not one of the labels {labels}")
    return texts, labels.index(answer)


def _hashed_position(text: str, n: int) -> int:
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:4], "big") % n


def _openbookqa(row: dict, where: Where) -> Row:
    choices, answer = _labelled(row, where)
    return Row(_text(row, "question_stem", where), choices, answer, id=row.get("id"), task="openbookqa")


def _arc(row: dict, where: Where) -> Row:
    choices, answer = _labelled(row, where)
    return Row(_text(row, "question", where), choices, answer, id=row.get("id"), task="arc")


def _commonsense_qa(row: dict, where: Where) -> Row:
    choices, answer = _labelled(row, where)
    return Row(_text(row, "question", where), choices, answer, id=row.get("id"), task="commonsense_qa")


def _sciq(row: dict, where: Where) -> Row:
    question = _text(row, "question", where)
    wrong = [_text(row, f"distractor{i}", where) for i in (1, 2, 3)]
    position = _hashed_position(question, 4)
    choices = wrong[:position] + [_text(row, "correct_answer", where)] + wrong[position:]
    support = row.get("support") or ""
    text = f"{support.strip()}\n{question}" if isinstance(support, str) and support.strip() else question
    return Row(text, choices, position, task="sciq")


def _social_i_qa(row: dict, where: Where) -> Row:
    question = f"{_text(row, 'context', where)}\n{_text(row, 'question', where)}"
    choices = [_text(row, f"answer{x}", where) for x in "ABC"]
    return Row(question, choices, _int(row.get("label"), "'label'", where) - 1, task="social_i_qa")


def _piqa(row: dict, where: Where) -> Row:
    choices = [_text(row, "sol1", where), _text(row, "sol2", where)]
    return Row(_text(row, "goal", where), choices, _int(row.get("label"), "'label'", where), task="piqa")


def _boolq(row: dict, where: Where) -> Row:
    answer = row.get("answer")
    if not isinstance(answer, bool):
        raise where.error(f"column 'answer' must be true or false, got {kind(answer)} {show(answer)}")
    question = f"{_text(row, 'passage', where)}\nQuestion: {_text(row, 'question', where)}?"
    return Row(question, ["no", "yes"], int(answer), task="boolq")


def _winogrande(row: dict, where: Where) -> Row:
    """Partial scoring, as lm-evaluation-harness does: each option fills the blank and the model
    scores the fixed rest of the sentence after it."""
    sentence = _text(row, "sentence", where)
    if sentence.count("_") != 1:
        raise where.error(f"'sentence' must have exactly one blank '_', got {show(sentence)}")
    before, after = sentence.split("_")
    options = [_text(row, "option1", where), _text(row, "option2", where)]
    answer = _int(row.get("answer"), "'answer'", where) - 1
    continuation = after.strip()
    if not continuation:
        raise where.error("'sentence' has nothing after its blank to score")
    return Row(
        sentence,
        [before + o for o in options],
        answer,
        task="winogrande",
        continuation=continuation,
        meta={"blank_options": options},
    )


def _hellaswag(row: dict, where: Where) -> Row:
    context = f"{_text(row, 'activity_label', where)}: {_text(row, 'ctx', where)}"
    ind = row.get("ind")
    return Row(
        context,
        _texts(row, "endings", where),
        _int(row.get("label"), "'label'", where),
        id=None if ind is None else f"hellaswag-{ind}",
        task="hellaswag",
    )


def _mmlu(row: dict, where: Where) -> Row:
    subject = row.get("subject") if isinstance(row.get("subject"), str) and row.get("subject") else "mmlu"
    return Row(
        _text(row, "question", where),
        _texts(row, "choices", where),
        _int(row.get("answer"), "'answer'", where),
        task=subject,
    )


def _glue_id(row: dict, name: str) -> str | None:
    idx = row.get("idx")
    if isinstance(idx, dict):
        return f"{name}-" + "-".join(str(idx[k]) for k in sorted(idx))
    return None if idx is None else f"{name}-{idx}"


def _sg_boolq(row: dict, where: Where) -> Row:
    question = f"{_text(row, 'passage', where)}\nQuestion: {_text(row, 'question', where)}?"
    return Row(
        question,
        ["no", "yes"],
        _int(row.get("label"), "'label'", where),
        id=_glue_id(row, "boolq"),
        task="super_glue_boolq",
    )


def _sg_copa(row: dict, where: Where) -> Row:
    relation = _text(row, "question", where).strip()
    if relation not in ("cause", "effect"):
        raise where.error(f"'question' must be 'cause' or 'effect', got {show(relation)}")
    question = f"{_text(row, 'premise', where)} What was the {relation}?"
    choices = [_text(row, "choice1", where), _text(row, "choice2", where)]
    return Row(
        question, choices, _int(row.get("label"), "'label'", where), id=_glue_id(row, "copa"), task="copa"
    )


def _sg_multirc(row: dict, where: Where) -> Row:
    """One row judges one candidate answer: a yes/no question about it."""
    question = (
        f"{_text(row, 'paragraph', where)}\nQuestion: {_text(row, 'question', where)}\n"
        f"Candidate answer: {_text(row, 'answer', where)}\nIs the candidate answer correct?"
    )
    return Row(
        question,
        ["no", "yes"],
        _int(row.get("label"), "'label'", where),
        id=_glue_id(row, "multirc"),
        task="multirc",
    )


def _bigbench(row: dict, where: Where) -> Row:
    choices = _texts(row, "multiple_choice_targets", where)
    scores = row.get("multiple_choice_scores")
    if not isinstance(scores, list) or len(scores) != len(choices):
        raise where.error(
            "'multiple_choice_scores' must give one score per multiple-choice target "
            "(is this a generative BIG-bench task?)"
        )
    if 1 not in scores:
        raise where.error("no multiple-choice target has score 1, so there is no right answer")
    idx = row.get("idx")
    return Row(
        _text(row, "inputs", where),
        choices,
        scores.index(1),
        id=None if idx is None else f"bigbench-{idx}",
        task="bigbench",
    )


def _knowref(row: dict, where: Where) -> Row:
    sentence = _text(row, "swapped_sentence", where)
    choices = [_text(row, "candidate_0", where), _text(row, "candidate_1", where)]
    key = _text(row, "correct_candidate", where).strip()
    if key not in ("candidate_0", "candidate_1"):
        raise where.error(f"'correct_candidate' must be 'candidate_0' or 'candidate_1', got {show(key)}")
    question = f"{sentence}\nWho does the pronoun in brackets refer to?"
    return Row(question, choices, int(key[-1]), task="knowref")


def _p(name: str, hub: tuple[str, ...], columns: set[str], convert: Convert, description: str) -> Preset:
    return Preset(name, hub, frozenset(columns), convert, description)


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in [
        _p(
            "openbookqa",
            ("allenai/openbookqa",),
            {"id", "question_stem", "choices", "answerKey"},
            _openbookqa,
            "question_stem, choices {text, label}, answerKey",
        ),
        _p(
            "sciq",
            ("allenai/sciq",),
            {"question", "distractor1", "distractor2", "distractor3", "correct_answer"},
            _sciq,
            "question, distractor1-3, correct_answer, support (the answer's place is hashed from the "
            "question)",
        ),
        _p(
            "commonsense_qa",
            ("tau/commonsense_qa",),
            {"id", "question", "question_concept", "choices", "answerKey"},
            _commonsense_qa,
            "question, choices {label, text}, answerKey",
        ),
        _p(
            "social_i_qa",
            ("allenai/social_i_qa",),
            {"context", "question", "answerA", "answerB", "answerC", "label"},
            _social_i_qa,
            "context, question, answerA-C, label '1'-'3'",
        ),
        _p(
            "arc",
            ("allenai/ai2_arc",),
            {"id", "question", "choices", "answerKey"},
            _arc,
            "question, choices {text, label}, answerKey (letters or digits)",
        ),
        _p("piqa", ("ybisk/piqa",), {"goal", "sol1", "sol2", "label"}, _piqa, "goal, sol1, sol2, label 0/1"),
        _p(
            "boolq",
            ("google/boolq",),
            {"question", "answer", "passage"},
            _boolq,
            "passage, question, answer (bool)",
        ),
        _p(
            "winogrande",
            ("allenai/winogrande",),
            {"sentence", "option1", "option2", "answer"},
            _winogrande,
            "sentence with one '_', option1, option2, answer '1'/'2' (partial scoring)",
        ),
        _p(
            "hellaswag",
            ("Rowan/hellaswag",),
            {"ctx", "endings", "label", "activity_label"},
            _hellaswag,
            "activity_label, ctx, endings, label '0'-'3'",
        ),
        _p(
            "mmlu",
            ("cais/mmlu",),
            {"question", "subject", "choices", "answer"},
            _mmlu,
            "question, subject, choices, answer 0-3 (task = subject)",
        ),
        _p(
            "super_glue_boolq",
            ("aps/super_glue:boolq",),
            {"question", "passage", "idx", "label"},
            _sg_boolq,
            "passage, question, idx, label 0/1",
        ),
        _p(
            "super_glue_copa",
            ("aps/super_glue:copa",),
            {"premise", "choice1", "choice2", "question", "idx", "label"},
            _sg_copa,
            "premise, choice1, choice2, question cause/effect, label 0/1",
        ),
        _p(
            "super_glue_multirc",
            ("aps/super_glue:multirc",),
            {"paragraph", "question", "answer", "idx", "label"},
            _sg_multirc,
            "paragraph, question, answer, idx, label 0/1 (one row per candidate answer: no/yes)",
        ),
        _p(
            "bigbench",
            ("tasksource/bigbench",),
            {"inputs", "multiple_choice_targets", "multiple_choice_scores"},
            _bigbench,
            "inputs, multiple_choice_targets, multiple_choice_scores (multiple-choice tasks only)",
        ),
        _p(
            "knowref",
            ("coref-data/knowref_60k_raw",),
            {"swapped_sentence", "candidate_0", "candidate_1", "correct_candidate"},
            _knowref,
            "swapped_sentence, candidate_0, candidate_1, correct_candidate",
        ),
    ]
}
ALIASES = {
    "obqa": "openbookqa",
    "ai2_arc": "arc",
    "arc_challenge": "arc",
    "arc_easy": "arc",
    "csqa": "commonsense_qa",
    "siqa": "social_i_qa",
    "copa": "super_glue_copa",
    "multirc": "super_glue_multirc",
}


def get_preset(name: str, source: str | None = None) -> Preset:
    """The preset called ``name`` (case, dashes and common aliases forgiven), or one sentence listing them."""
    key = name.strip().lower().replace("-", "_")
    key = ALIASES.get(key, key)
    if key not in PRESETS:
        import difflib

        near = difflib.get_close_matches(key, list(PRESETS) + list(ALIASES), n=1)
        hint = f"; did you mean {near[0]!r}?" if near else ""
        raise DataError(source, None, f"unknown preset {name!r}{hint} (presets: {', '.join(PRESETS)})")
    return PRESETS[key]


def detect_preset(columns: list[str] | set[str]) -> Preset | None:
    """The preset whose identifying columns all appear in ``columns``, most specific first; None if none does.

    >>> detect_preset(["question", "passage", "idx", "label"]).name
    'super_glue_boolq'
    """
    have = set(columns)
    matches = [p for p in PRESETS.values() if p.columns <= have]
    return max(matches, key=lambda p: len(p.columns)) if matches else None


@dataclass(frozen=True)
class FieldMap:
    """A schema named by its columns. ``choices`` is one column (a list of texts, or ARC's
    ``{text, label}``) or several columns joined by commas (``answerA,answerB,answerC``). The answer
    column may hold a 0-based index, a letter, one of the choice labels, or the right choice's text.
    ``context``, when given, is put before the question on a line of its own. A row's ``id`` column,
    when there is one, is its example id.

    A digit string in the answer column ("2") could be a choice's text or an index: one rule decides
    for the whole file (``for_rows``), never row by row. It is a choice's text (or label) when it is
    one in every row whose answer is a digit string, else a 0-based index in every row."""

    question: str
    choices: str
    answer: str
    context: str | None = None
    digits: str | None = None  # "text" or "index": how this file's digit-string answers read (``for_rows``)

    def for_rows(self, rows: Iterable[dict]) -> FieldMap:
        """This mapping with the file's one rule for digit-string answers (see the class doc)."""
        as_text = None
        for row in rows:
            value = row.get(self.answer)
            if not (isinstance(value, str) and value.strip().isdigit()):
                continue
            try:
                choices, labels = self._choices(row, Where("", None))
            except DataError:
                continue  # the row is refused when it is converted
            as_text = value.strip() in choices or value.strip() in (labels or [])
            if not as_text:
                break
        return replace(self, digits="text" if as_text else "index")

    def _choices(self, row: dict, where: Where) -> tuple[list[str], list[str] | None]:
        if "," in self.choices:
            return [_text(row, c.strip(), where) for c in self.choices.split(",") if c.strip()], None
        value = row.get(self.choices)
        if self.choices not in row:
            raise where.error(f"missing column {self.choices!r} (columns: {show(sorted(row), 80)})")
        if isinstance(value, dict):
            return _texts(value, "text", where), _texts(value, "label", where)
        return _texts(row, self.choices, where), None

    def convert(self, row: dict, where: Where) -> Row:
        question = _text(row, self.question, where)
        if self.context:
            question = f"{_text(row, self.context, where)}\n{question}"
        choices, labels = self._choices(row, where)
        if self.answer not in row:
            raise where.error(f"missing column {self.answer!r} (columns: {show(sorted(row), 80)})")
        sid = row.get("id")
        sid = (
            str(sid)
            if isinstance(sid, (str, int)) and not isinstance(sid, bool) and str(sid).strip()
            else None
        )
        return Row(question, choices, self._answer(row[self.answer], choices, labels, where), id=sid)

    def _answer(self, value: Any, choices: list[str], labels: list[str] | None, where: Where) -> int:
        what = f"answer column {self.answer!r}"
        if isinstance(value, bool):
            return int(value)  # no/yes
        if isinstance(value, int):
            return _int(value, what, where)
        if not isinstance(value, str) or not value.strip():
            return _int(value, what, where)  # the one sentence for empty or wrongly typed labels
        text = value.strip()
        if text.isdigit() and self.digits != "text":  # the file's rule: an index ("index", or not decided)
            return int(text)
        if labels and text in labels:
            return labels.index(text)
        if text in choices:
            return choices.index(text)
        if len(text) == 1 and text.upper() in LETTERS:
            return LETTERS.index(text.upper())
        raise where.error(f"{what} is {show(value)}: not an index, a letter, a label or one of the choices")
