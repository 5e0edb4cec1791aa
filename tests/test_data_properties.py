"""Property tests: whatever the input, a loader returns valid examples or raises DataError.

And the other way round: any valid data written in a format loads back unchanged.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import string
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from moe_roma.data import FORMATS, MCExample, detect_format, load_examples
from moe_roma.data.example import LETTERS
from moe_roma.io.errors import DataError

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SUFFIX = {
    "roma-jsonl": ".jsonl",
    "llm-foundry": ".jsonl",
    "arc-jsonl": ".jsonl",
    "obqa-tsv": ".tsv",
    "mmlu-csv": ".csv",
}


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Module-scoped: hypothesis re-runs the test body many times with one fixture value.
    return tmp_path_factory.mktemp("props")


def load_or_data_error(path: Path, fmt: str | None) -> list[MCExample] | None:
    """Load; a DataError is fine (returns None), anything else fails the test."""
    try:
        examples = load_examples(path, format=fmt)
    except DataError as exc:
        assert str(path) in str(exc) and "\n" not in str(exc)
        return None
    assert examples, "a successful load is never empty"
    assert len({ex.id for ex in examples}) == len(examples)
    for ex in examples:
        assert isinstance(ex, MCExample) and isinstance(ex.question, str) and ex.question.strip()
        assert 2 <= len(ex.choices) <= 26 and 0 <= ex.answer < len(ex.choices)
        assert all(isinstance(c, str) and c.strip() for c in ex.choices)
        (ex.question + "".join(ex.choices)).encode("utf-8")  # always writable text
    return examples


# --- arbitrary input never escapes as another exception ------------------------------------

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=8),
    st.sampled_from(["A", "B", "1", "4", "(C)", "a) x", ""]),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=5), inner, max_size=4),
    max_leaves=12,
)
FIELD_NAMES = [
    "query",
    "choices",
    "gold",
    "id",
    "task",
    "context_options",
    "continuation",
    "question",
    "answer",
    "answerKey",
    "stem",
    "label",
    "text",
]
records = st.dictionaries(st.sampled_from(FIELD_NAMES), json_values, max_size=6)
arc_like = st.fixed_dictionaries(
    {
        "question": st.one_of(
            json_values,
            st.fixed_dictionaries(
                {
                    "stem": json_values,
                    "choices": st.lists(
                        st.dictionaries(st.sampled_from(["label", "text"]), json_values), max_size=5
                    ),
                }
            ),
        ),
        "answerKey": json_values,
    },
    optional={"id": json_values},
)


@pytest.mark.parametrize("fmt", [*FORMATS, None])
@SETTINGS
@given(data=st.binary(max_size=300))
def test_arbitrary_bytes(scratch: Path, fmt: str | None, data: bytes) -> None:
    path = scratch / f"bytes{SUFFIX.get(fmt, '.dat')}"
    path.write_bytes(data)
    load_or_data_error(path, fmt)


@pytest.mark.parametrize("fmt", [*FORMATS, None])
@SETTINGS
@given(
    text=st.text(
        alphabet=st.characters(blacklist_categories=("Cs",)) | st.sampled_from('\t\n,"(A)(B){}[]:'),
        max_size=200,
    )
)
def test_arbitrary_text(scratch: Path, fmt: str | None, text: str) -> None:
    path = scratch / f"text{SUFFIX.get(fmt, '.txt')}"
    path.write_text(text, encoding="utf-8")
    load_or_data_error(path, fmt)


@pytest.mark.parametrize("fmt", ["roma-jsonl", "llm-foundry", "arc-jsonl", None])
@SETTINGS
@given(lines=st.lists(records | arc_like | json_values, min_size=1, max_size=4))
def test_json_ish_records(scratch: Path, fmt: str | None, lines: list) -> None:
    path = scratch / "records.jsonl"
    # allow_nan: NaN/Infinity tokens must be refused by the loader, not by the writer.
    path.write_text("\n".join(json.dumps(obj, allow_nan=True) for obj in lines), encoding="utf-8")
    load_or_data_error(path, fmt)


cells = st.text(
    alphabet=st.sampled_from(string.ascii_letters + " ,\"'\t\n\r()ABCD1-\u00e9\u2028"), max_size=12
)


@SETTINGS
@given(rows=st.lists(st.lists(cells, min_size=0, max_size=8), min_size=1, max_size=5), header=st.booleans())
def test_tsv_ish_rows(scratch: Path, rows: list[list[str]], header: bool) -> None:
    path = scratch / "rows.tsv"
    head = ["ID\tQuestion Stem\tChoices\tComplete Question\tAnswer Key"] if header else []
    path.write_text("\n".join(head + ["\t".join(r) for r in rows]), encoding="utf-8")
    load_or_data_error(path, "obqa-tsv")


@SETTINGS
@given(rows=st.lists(st.lists(cells, min_size=0, max_size=30), min_size=1, max_size=5), quote=st.booleans())
def test_csv_ish_rows(scratch: Path, rows: list[list[str]], quote: bool) -> None:
    path = scratch / "subject_test.csv"
    if quote:
        buffer = io.StringIO()
        csv.writer(buffer).writerows(rows)
        path.write_text(buffer.getvalue(), encoding="utf-8")
    else:
        path.write_text("\n".join(",".join(r) for r in rows), encoding="utf-8")
    load_or_data_error(path, "mmlu-csv")


@SETTINGS
@given(data=st.binary(max_size=200), suffix=st.sampled_from([".jsonl", ".json", ".tsv", ".csv", ".txt", ""]))
def test_detect_format_names_a_format_or_raises_data_error(scratch: Path, data: bytes, suffix: str) -> None:
    path = scratch / f"detect{suffix}"
    path.write_bytes(data)
    with contextlib.suppress(DataError):
        assert detect_format(path) in FORMATS


# --- valid data round-trips -----------------------------------------------------------------

# Text that any format can hold: no tabs/newlines (TSV), no "(X)" labels (OBQA), non-blank, stripped.
safe_text = (
    st.text(
        alphabet=st.sampled_from(string.ascii_letters + string.digits + " ,.'\"?!\u00e9\u4e2d"),
        min_size=1,
        max_size=20,
    )
    .map(str.strip)
    .filter(bool)
)


@st.composite
def examples(draw: st.DrawFn) -> list[tuple[str, list[str], int]]:
    items = []
    for _ in range(draw(st.integers(1, 4))):
        choices = draw(st.lists(safe_text, min_size=2, max_size=26))
        items.append((draw(safe_text), choices, draw(st.integers(0, len(choices) - 1))))
    return items


def write_as(fmt: str, folder: Path, items: list[tuple[str, list[str], int]]) -> Path:
    if fmt == "roma-jsonl":
        recs = [
            {"question": q, "choices": [f"{LETTERS[i]}) {c}" for i, c in enumerate(cs)], "answer": LETTERS[a]}
            for q, cs, a in items
        ]
    elif fmt == "llm-foundry":
        recs = [{"query": q, "choices": cs, "gold": a} for q, cs, a in items]
    elif fmt == "arc-jsonl":
        recs = [
            {
                "id": f"arc_{n}",
                "question": {
                    "stem": q,
                    "choices": [{"label": str(i + 1), "text": c} for i, c in enumerate(cs)],
                },
                "answerKey": str(a + 1),
            }
            for n, (q, cs, a) in enumerate(items)
        ]
    elif fmt == "obqa-tsv":
        path = folder / "obqa.tsv"
        lines = ["ID\tQuestion Stem\tChoices\tComplete Question\tAnswer Key"]
        for n, (q, cs, a) in enumerate(items):
            labelled = " ".join(f"({LETTERS[i]}) {c}" for i, c in enumerate(cs))
            lines.append(f"7-{n}\t{q}\t{labelled}\t{q} {labelled}\t{LETTERS[a]}")
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        return path
    else:
        path = folder / "topic_test.csv"
        buffer = io.StringIO()
        width = max(len(cs) for _, cs, _ in items)
        # every row of an MMLU file has the same width, so pad by repeating the last choice
        csv.writer(buffer).writerows(
            [q, *cs, *[cs[-1]] * (width - len(cs)), LETTERS[a]] for q, cs, a in items
        )
        path.write_text(buffer.getvalue(), encoding="utf-8")
        return path
    path = folder / "data.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in recs), encoding="utf-8")
    return path


@pytest.mark.parametrize("fmt", list(FORMATS))
@settings(max_examples=40, deadline=None)
@given(items=examples())
def test_valid_data_round_trips(scratch: Path, fmt: str, items: list[tuple[str, list[str], int]]) -> None:
    folder = scratch / f"rt-{fmt}"
    folder.mkdir(exist_ok=True)
    path = write_as(fmt, folder, items)
    assert detect_format(path) == fmt
    loaded = load_examples(path)
    if fmt == "mmlu-csv":
        width = max(len(cs) for _, cs, _ in items)
        items = [(q, cs + [cs[-1]] * (width - len(cs)), a) for q, cs, a in items]
    assert [(ex.question, list(ex.choices), ex.answer) for ex in loaded] == items
