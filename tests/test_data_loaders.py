"""Loaders: real benchmark files, synthetic official-ARC files, and a matrix of bad inputs."""

from __future__ import annotations

import doctest
import json
import re
from pathlib import Path

import pytest

import moe_roma.data.formats._common as common_module
import moe_roma.data.formats.jsonl as jsonl_module
import moe_roma.data.formats.mmlu as mmlu_module
import moe_roma.data.formats.obqa as obqa_module
import moe_roma.data.loaders as loaders_module
from moe_roma.data import FORMATS, MCExample, describe_formats, detect_format, load_examples
from moe_roma.data.loaders import summarize_examples
from moe_roma.io.errors import DataError

BENCH = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "benchmarks"
needs_bench = pytest.mark.skipif(
    not BENCH.is_dir(),
    reason=f"real benchmark files not found at {BENCH} (shared/ must sit beside the checkout)",
)


def write(path: Path, content: str | bytes) -> Path:
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


def jsonl(*records: object) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)


def assert_valid(examples: list[MCExample]) -> None:
    assert examples
    assert len({ex.id for ex in examples}) == len(examples)
    for ex in examples:
        assert isinstance(ex, MCExample)
        assert 2 <= len(ex.choices) <= 26 and 0 <= ex.answer < len(ex.choices)
        assert ex.question.strip() and all(isinstance(c, str) and c.strip() for c in ex.choices)


# --- real files --------------------------------------------------------------------------

REAL = [
    # (relative path, format, examples, choices per question, tasks)
    ("arc_challenge.jsonl", "llm-foundry", 1172, 4, 1),
    ("arc_easy.jsonl", "llm-foundry", 2376, 4, 1),
    ("openbook_qa.jsonl", "llm-foundry", 500, 4, 1),
    ("piqa.jsonl", "llm-foundry", 1838, 2, 1),
    ("siqa.jsonl", "llm-foundry", 1954, 2, 1),
    ("commonsense_qa.jsonl", "llm-foundry", 1221, 4, 1),
    ("copa.jsonl", "llm-foundry", 100, 2, 1),
    ("boolq.jsonl", "llm-foundry", 3270, 2, 1),
    ("winogrande.jsonl", "llm-foundry", 1267, 2, 1),
    ("openbookqa/train.tsv", "obqa-tsv", 4957, 4, 1),
    ("openbookqa/dev.tsv", "obqa-tsv", 500, 4, 1),
    ("openbookqa/test.tsv", "obqa-tsv", 500, 4, 1),
    ("mmlu/test", "mmlu-csv", 14079, 4, 57),
    ("mmlu/val", "mmlu-csv", 1542, 4, 57),
    ("mmlu/dev", "mmlu-csv", 285, 4, 57),
]


@needs_bench
@pytest.mark.realdata
@pytest.mark.parametrize(("rel", "fmt", "n", "n_choices", "n_tasks"), REAL, ids=[r[0] for r in REAL])
def test_real_files_load_with_the_documented_counts(
    rel: str, fmt: str, n: int, n_choices: int, n_tasks: int
) -> None:
    path = BENCH / rel
    assert detect_format(path) == fmt
    examples = load_examples(path)
    assert_valid(examples)
    summary = summarize_examples(examples)
    assert summary["n_examples"] == n
    assert summary["choice_histogram"] == {str(n_choices): n}
    assert summary["n_tasks"] == n_tasks
    assert load_examples(path, format=fmt) == examples  # explicit format = detected format


@needs_bench
@pytest.mark.realdata
def test_real_openbookqa_keeps_official_ids_and_the_odd_item() -> None:
    by_id = {ex.id: ex for ex in load_examples(BENCH / "openbookqa" / "train.tsv")}
    sun = by_id["7-980"]
    assert sun.question == "The sun is responsible for"
    assert sun.choices[3] == "plants sprouting, blooming and wilting" and sun.answer_letter == "D"
    assert sun.task == "openbookqa"
    # "(A) .. (D) baby birds chewing worms (D) mother dogs ..." has a repeated label: kept, 4 choices.
    odd = by_id["12-1145"]
    assert len(odd.choices) == 4 and odd.answer_letter == "B"
    assert odd.choices[3] == "baby birds chewing worms (D) mother dogs nursing their pups"


@needs_bench
@pytest.mark.realdata
def test_real_winogrande_is_partial_scoring_with_a_blank_sentence() -> None:
    examples = load_examples(BENCH / "winogrande.jsonl")
    first = examples[0]
    assert first.continuation == "always got the easier cases."
    assert first.choices == (
        "Sarah was a much better surgeon than Maria so Sarah",
        "Sarah was a much better surgeon than Maria so Maria",
    )
    assert first.question == "Sarah was a much better surgeon than Maria so _ always got the easier cases."
    assert first.meta["blank_options"] == ["Sarah", "Maria"]
    assert all(ex.continuation and "_" in ex.question for ex in examples)
    assert all(all(opt for opt in ex.meta["blank_options"]) for ex in examples)


@needs_bench
@pytest.mark.realdata
def test_real_mmlu_ids_tasks_and_top_folder() -> None:
    examples = load_examples(BENCH / "mmlu" / "test")
    first = examples[0]
    assert first.id == "abstract_algebra/test/1" and first.task == "abstract_algebra"
    assert first.choices == ("0", "4", "2", "6") and first.answer_letter == "B"
    counts = summarize_examples(examples)["tasks"]
    assert counts["professional_law"] == 1534
    single = load_examples(BENCH / "mmlu" / "test" / "abstract_algebra_test.csv")
    assert [ex.id for ex in single] == [ex.id for ex in examples if ex.task == "abstract_algebra"]
    with pytest.raises(DataError, match=r"point at one split, e\.g\. .*mmlu/test"):
        load_examples(BENCH / "mmlu")


@needs_bench
@pytest.mark.realdata
def test_real_llm_foundry_defaults() -> None:
    ex = load_examples(BENCH / "arc_challenge.jsonl")[0]
    assert (ex.id, ex.task, ex.answer, ex.continuation) == ("arc_challenge-1", "arc_challenge", 2, None)
    assert ex.meta["record"] == "line 1"
    tagged = load_examples(BENCH / "copa.jsonl", task="copa-test")
    assert {e.task for e in tagged} == {"copa-test"}


# --- synthetic official ARC ----------------------------------------------------------------


def arc_record(id_: str, labels: list[str], key: str, stem: str = "Which one?") -> dict:
    return {
        "id": id_,
        "question": {"stem": stem, "choices": [{"text": f"choice {lab}", "label": lab} for lab in labels]},
        "answerKey": key,
    }


def test_arc_jsonl_maps_digit_labels_and_keys(tmp_path: Path) -> None:
    path = write(
        tmp_path / "ARC-Challenge-Test.jsonl",
        jsonl(
            arc_record("Mercury_1", ["A", "B", "C", "D"], "C"),
            arc_record("NYSEDREGENTS_2", ["1", "2", "3", "4"], "4"),
            arc_record("Mercury_3", ["A", "B", "C"], "B"),  # three choices
            arc_record("Mercury_4", ["A", "B", "C", "D", "E"], "E"),  # five choices
            arc_record("Mixed_5", ["A", "B", "C", "D"], "2"),  # a digit key over letter labels
            arc_record("Mixed_6", ["1", "2", "3", "4"], "A"),  # a letter key over digit labels
        ),
    )
    assert detect_format(path) == "arc-jsonl"
    examples = load_examples(path)
    assert_valid(examples)
    assert [(ex.id, ex.answer, len(ex.choices)) for ex in examples] == [
        ("Mercury_1", 2, 4),
        ("NYSEDREGENTS_2", 3, 4),
        ("Mercury_3", 1, 3),
        ("Mercury_4", 4, 5),
        ("Mixed_5", 1, 4),
        ("Mixed_6", 0, 4),
    ]
    assert examples[1].choices[3] == "choice 4" and examples[1].meta["labels"] == ["1", "2", "3", "4"]
    assert {ex.task for ex in examples} == {"ARC-Challenge-Test"}


def test_arc_jsonl_without_ids_falls_back_to_stem_and_line(tmp_path: Path) -> None:
    rec = arc_record("x", ["A", "B"], "A")
    del rec["id"]
    path = write(tmp_path / "arc.jsonl", jsonl(rec) + "\n" + jsonl(rec))  # blank line 2 is skipped
    assert [ex.id for ex in load_examples(path)] == ["arc-1", "arc-3"]


# --- roma-jsonl and llm-foundry specifics --------------------------------------------------


def test_roma_jsonl_strips_labels_and_reads_letters(tmp_path: Path) -> None:
    path = write(
        tmp_path / "test.jsonl",
        jsonl(
            {"question": "Q1?", "choices": ["A) red", "B) blue", "C) green", "D) black"], "answer": "C"},
            {"question": "Q2?", "choices": ["A. one", "B. two"], "answer": "b", "id": "q2", "task": "count"},
            {"question": "Q3?", "choices": ["A. Lincoln", "Washington"], "answer": "A"},  # not labels
            {"question": "Q4?", "choices": ["(A) x", "(B) y"], "answer": "(B)", "id": 7},
        ),
    )
    assert detect_format(path) == "roma-jsonl"
    ex = load_examples(path)
    assert ex[0].choices == ("red", "blue", "green", "black") and ex[0].answer == 2 and ex[0].id == "test-1"
    assert (ex[1].id, ex[1].task, ex[1].answer) == ("q2", "count", 1)
    assert ex[2].choices == ("A. Lincoln", "Washington")
    assert (ex[3].id, ex[3].choices, ex[3].answer) == ("7", ("x", "y"), 1)
    assert {e.task for e in load_examples(path, task="obqa")} == {"obqa"}


def test_llm_foundry_optional_fields_and_format_override(tmp_path: Path) -> None:
    path = write(
        tmp_path / "mix.jsonl",
        jsonl(
            {"query": "Q", "choices": ["a", "b", "c"], "gold": 2, "id": "first", "task": "t1"},
            {"query": "Q", "choices": ["a", "b"], "gold": 1.0},  # an integral float is accepted
        ),
    )
    ex = load_examples(path, format="LLM_Foundry")  # names are case- and underscore-insensitive
    assert [(e.id, e.task, e.answer) for e in ex] == [("first", "t1", 2), ("mix-2", "mix", 1)]


def test_unicode_that_is_fine_loads_unchanged(tmp_path: Path) -> None:
    question = "Qu'est-ce que \u00e7a? \U0001f600 \u05e9\u05dc\u05d5\u05dd e\u0301 \u2028 end"
    # Written raw (ensure_ascii=False), U+2028 inside a string must not split the line.
    path = write(
        tmp_path / "u.jsonl",
        jsonl(
            {"query": question, "choices": ["\u4e2d\u6587", "\u00fcber"], "gold": 0},
            {"query": "b", "choices": ["x", "y"], "gold": 1},
        ),
    )
    ex = load_examples(path)
    assert ex[0].question == question and ex[0].choices == ("\u4e2d\u6587", "\u00fcber")
    assert ex[1].meta["record"] == "line 2"
    bom = write(
        tmp_path / "bom.jsonl",
        b"\xef\xbb\xbf" + jsonl({"query": "q", "choices": ["x", "y"], "gold": 0}).encode(),
    )
    assert load_examples(bom)[0].question == "q"


def test_obqa_tsv_and_mmlu_csv_synthetic(tmp_path: Path) -> None:
    tsv = write(
        tmp_path / "obqa.tsv",
        "ID\tQuestion Stem\tChoices\tComplete Question\tAnswer Key\r\n"
        '1-1\tSay "hi"\t(A) yes (B) no (C) maybe\tSay "hi" (A) yes (B) no (C) maybe\tC\r\n',
    )
    (ex,) = load_examples(tsv)
    assert (ex.id, ex.question, ex.choices, ex.answer) == ("1-1", 'Say "hi"', ("yes", "no", "maybe"), 2)
    folder = tmp_path / "test"
    folder.mkdir()
    write(folder / "astronomy_test.csv", 'What,"a, b",c,d,e,A\n"multi\nline?",1,2,3,4,D\n\n')
    write(folder / "README.txt", "ignored")
    ex = load_examples(folder)
    assert [(e.id, e.task, e.answer) for e in ex] == [
        ("astronomy/test/1", "astronomy", 0),
        ("astronomy/test/2", "astronomy", 3),
    ]
    assert ex[0].choices == ("a, b", "c", "d", "e") and ex[1].question == "multi\nline?"
    assert ex[1].meta["record"] == "row 2 (line 2)"


def test_formats_registry_and_description() -> None:
    assert list(FORMATS) == ["roma-jsonl", "llm-foundry", "arc-jsonl", "obqa-tsv", "mmlu-csv"]
    text = describe_formats()
    assert all(name in text for name in FORMATS) and len(text.splitlines()) == len(FORMATS)


@pytest.mark.parametrize(
    "module",
    [loaders_module, common_module, jsonl_module, obqa_module, mmlu_module],
    ids=lambda m: m.__name__,
)
def test_docstring_examples(module: object) -> None:
    failures, _ = doctest.testmod(module)  # type: ignore[arg-type]
    assert failures == 0


# --- bad inputs ----------------------------------------------------------------------------

OBQA_HEADER = "ID\tQuestion Stem\tChoices\tComplete Question\tAnswer Key\n"
GOOD_FOUNDRY = json.dumps({"query": "q", "choices": ["a", "b", "c", "d"], "gold": 0})
GOOD_ROMA = {"question": "q", "choices": ["A) a", "B) b", "C) c", "D) d"], "answer": "A"}


def foundry(**fields: object) -> str:
    rec = {"query": "q", "choices": ["a", "b", "c", "d"], "gold": 0}
    rec.update(fields)
    return json.dumps({k: v for k, v in rec.items() if v is not MISSING}) + "\n"


MISSING = object()

# (case id, file name, content, format or None, record named in the message or None, problem text)
BAD = [
    ("truncated-json", "a.jsonl", GOOD_FOUNDRY + '\n{"query": "q", "choi', None, "line 2", "truncated JSON"),
    ("json-array-line", "a.jsonl", GOOD_FOUNDRY + "\n[1, 2]\n", None, "line 2", "expected a JSON object"),
    ("gold-is-string", "a.jsonl", foundry(gold="1"), None, "line 1", "'gold' must be an integer"),
    ("gold-is-bool", "a.jsonl", foundry(gold=True), None, "line 1", "'gold' must be an integer"),
    ("gold-fraction", "a.jsonl", foundry(gold=1.5), None, "line 1", "'gold' must be an integer"),
    ("choices-not-list", "a.jsonl", foundry(choices="abcd"), None, "line 1", "'choices' must be a list"),
    (
        "choice-not-string",
        "a.jsonl",
        foundry(choices=["a", 3]),
        None,
        "line 1",
        "'choices'[1] must be a string",
    ),
    ("empty-choice", "a.jsonl", foundry(choices=["a", "  "]), None, "line 1", "'choices'[1] is empty"),
    ("empty-question", "a.jsonl", foundry(query=" "), None, "line 1", "'query' is empty"),
    ("empty-file", "a.jsonl", "", None, None, "file is empty"),
    ("blank-file", "a.jsonl", "\n  \n\n", "llm-foundry", None, "file is empty"),
    ("binary-garbage", "a.jsonl", b"\x89PNG\r\n\x1a\n\x00\xff\xfe\x00garbage", None, "line 1", "not UTF-8"),
    (
        "latin1-line-3",
        "a.jsonl",
        ((GOOD_FOUNDRY + "\n") * 2 + '{"query": "caf\xe9"}\n').encode("latin-1"),
        "llm-foundry",
        "line 3",
        "not UTF-8",
    ),
    (
        "nan-gold",
        "a.jsonl",
        '{"query": "q", "choices": ["a", "b"], "gold": NaN}\n',
        None,
        "line 1",
        "NaN is not valid JSON",
    ),
    (
        "inf-gold",
        "a.jsonl",
        '{"query": "q", "choices": ["a", "b"], "gold": 1e999}\n',
        None,
        "line 1",
        "finite",
    ),
    (
        "huge-int",
        "a.jsonl",
        '{"query": "q", "choices": ["a", "b"], "gold": ' + "9" * 5000 + "}\n",
        None,
        "line 1",
        "unusable JSON",
    ),
    (
        "deep-nesting",
        "a.jsonl",
        GOOD_FOUNDRY + "\n" + "[" * 100000 + "]" * 100000 + "\n",
        "llm-foundry",
        "line 2",
        "unusable JSON",
    ),
    (
        "lone-surrogate",
        "a.jsonl",
        '{"query": "bad \\ud800 text", "choices": ["a", "b"], "gold": 0}\n',
        None,
        "line 1",
        "invalid character",
    ),
    (
        "nul-in-text",
        "a.jsonl",
        '{"query": "q", "choices": ["a\\u0000", "b"], "gold": 0}\n',
        None,
        "line 1",
        "NUL",
    ),
    ("one-choice", "a.jsonl", foundry(choices=["only"]), None, "line 1", "at least 2"),
    ("27-choices", "a.jsonl", foundry(choices=[f"c{i}" for i in range(27)]), None, "line 1", "at most 26"),
    ("gold-out-of-range", "a.jsonl", foundry(gold=4), None, "line 1", "'gold' is 4 but there are 4 choices"),
    ("gold-negative", "a.jsonl", foundry(gold=-1), None, "line 1", "'gold' is -1"),
    ("missing-gold", "a.jsonl", foundry(gold=MISSING), None, "line 1", "missing field 'gold'"),
    (
        "duplicate-ids",
        "a.jsonl",
        foundry(id="x") + foundry(id="y") + foundry(id="x"),
        None,
        "line 3",
        "duplicate id 'x' (first used at line 1)",
    ),
    (
        "both-choice-kinds",
        "a.jsonl",
        foundry(context_options=["a", "b"], continuation="c"),
        "llm-foundry",
        "line 1",
        "both",
    ),
    ("unknown-keys", "a.jsonl", '{"prompt": "q", "label": 1}\n', None, "line 1", "cannot tell the format"),
    (
        "roma-answer-not-letter",
        "r.jsonl",
        json.dumps({**GOOD_ROMA, "answer": 2}) + "\n",
        None,
        "line 1",
        "'answer' must be a letter",
    ),
    (
        "roma-answer-out-of-range",
        "r.jsonl",
        json.dumps({**GOOD_ROMA, "answer": "E"}) + "\n",
        None,
        "line 1",
        "only 4 choices",
    ),
    (
        "roma-label-only",
        "r.jsonl",
        json.dumps({**GOOD_ROMA, "choices": ["A) a", "B)"]}) + "\n",
        None,
        "line 1",
        "choice B (after its label) is empty",
    ),
    (
        "arc-key-not-a-label",
        "arc.jsonl",
        json.dumps(arc_record("x", ["A", "B", "C"], "F")) + "\n",
        None,
        "line 1",
        "'answerKey' 'F' is not among",
    ),
    (
        "arc-duplicate-label",
        "arc.jsonl",
        json.dumps(arc_record("x", ["A", "A"], "A")) + "\n",
        None,
        "line 1",
        "duplicate choice label",
    ),
    (
        "arc-question-string",
        "arc.jsonl",
        '{"question": "q", "answerKey": "A"}\n',
        "arc-jsonl",
        "line 1",
        "'question' must be an object",
    ),
    (
        "tsv-short-row",
        "t.tsv",
        OBQA_HEADER + "7-1\tq\t(A) a (B) b\tq\tA\n7-2\tq\t(A) a\n",
        None,
        "line 3",
        "3 tab-separated fields",
    ),
    (
        "tsv-key-out-of-range",
        "t.tsv",
        OBQA_HEADER + "7-1\tq\t(A) a (B) b\tq\tE\n",
        None,
        "line 2 (id 7-1)",
        "only 2 choices",
    ),
    (
        "tsv-no-labels",
        "t.tsv",
        OBQA_HEADER + "7-1\tq\ta or b\tq\tA\n",
        None,
        "line 2 (id 7-1)",
        "no '(A) ... (B) ...' labels",
    ),
    (
        "tsv-missing-column",
        "t.tsv",
        "ID\tQuestion Stem\tChoices\n7-1\tq\t(A) a (B) b\n",
        None,
        "line 1 (header)",
        "missing column 'Answer Key'",
    ),
    (
        "tsv-duplicate-id",
        "t.tsv",
        OBQA_HEADER + "7-1\tq\t(A) a (B) b\tq\tA\n7-1\tq\t(A) a (B) b\tq\tB\n",
        None,
        "line 3",
        "duplicate id '7-1'",
    ),
    ("tsv-header-only", "t.tsv", OBQA_HEADER, None, None, "no rows"),
    (
        "csv-short-row",
        "x_test.csv",
        "q,a,b,c,d,A\nq,a,b,c,D\n",
        None,
        "row 2 (line 2)",
        "has 5 fields but row 1 has 6",
    ),
    (
        "csv-bad-letter",
        "x_test.csv",
        "q,a,b,c,d,A\nq2,a,b,c,d,X\n",
        None,
        "row 2",
        "the answer letter is 'X'",
    ),
    ("csv-bad-quote", "x_test.csv", 'q,a,b,c,d,A\n"q2,a,b,c,d,B\n', None, "row 2", "malformed CSV"),
    ("csv-too-few-fields", "x_test.csv", "q,A\n", None, "row 1", "has 2 fields"),
    ("csv-empty-choice", "x_test.csv", "q,a,,c,d,A\n", None, "row 1", "choice 2 is empty"),
    ("undetectable-text", "notes.txt", "just some words\n", None, None, "cannot detect the format"),
]


@pytest.mark.parametrize(
    ("name", "content", "fmt", "record", "problem"), [c[1:] for c in BAD], ids=[c[0] for c in BAD]
)
def test_bad_inputs_raise_data_error_naming_file_and_record(
    tmp_path: Path, name: str, content: str | bytes, fmt: str | None, record: str | None, problem: str
) -> None:
    path = write(tmp_path / name, content)
    with pytest.raises(DataError) as info:
        load_examples(path, format=fmt)
    message = str(info.value)
    assert message.startswith(str(path)), message
    if record is None:
        assert info.value.record is None, message
    else:
        assert (info.value.record or "").startswith(record), message
    assert problem in message, message
    assert "\n" not in message and "\r" not in message


def test_unknown_format_lists_the_known_ones(tmp_path: Path) -> None:
    path = write(tmp_path / "a.jsonl", GOOD_FOUNDRY)
    with pytest.raises(DataError) as info:
        load_examples(path, format="squad")
    assert str(path) in str(info.value) and "unknown format 'squad'" in str(info.value)
    assert all(name in str(info.value) for name in FORMATS)


def test_missing_path(tmp_path: Path) -> None:
    for fmt in (None, "mmlu-csv", "obqa-tsv"):
        with pytest.raises(DataError, match="no such file or folder") as info:
            load_examples(tmp_path / "nope.jsonl", format=fmt)
        assert str(tmp_path / "nope.jsonl") in str(info.value)
    with pytest.raises(DataError, match="no such file or folder"):
        detect_format(tmp_path / "nope")


def test_folders(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="folder has no .csv files"):
        load_examples(tmp_path / "empty")
    top = tmp_path / "mmlu"
    for split in ("dev", "test"):
        (top / split).mkdir(parents=True)
        write(top / split / f"anatomy_{split}.csv", "q,a,b,A\n")
    with pytest.raises(DataError, match=r"split folders \(dev, test\).*e\.g\. .*test"):
        load_examples(top)
    with pytest.raises(DataError, match="is a folder"):
        load_examples(top / "test", format="llm-foundry")
    write(top / "test" / "bad_test.csv", "")  # an empty subject file is named
    with pytest.raises(DataError, match=r"bad_test\.csv: file is empty"):
        load_examples(top / "test")


# --- the documentation's examples -----------------------------------------------------------

DOCS = Path(__file__).resolve().parents[1] / "docs" / "data-formats.md"


def _python_blocks(text: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.MULTILINE | re.DOTALL)


@pytest.mark.skipif(not DOCS.is_file(), reason="docs/data-formats.md not found")
def test_docs_examples_run(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # the examples write their sample files where they run
    blocks = _python_blocks(DOCS.read_text(encoding="utf-8"))
    assert len(blocks) >= 6  # one per format plus the error example
    for block in blocks:
        exec(compile(block, str(DOCS), "exec"), {})
