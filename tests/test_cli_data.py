"""``roma data inspect`` run in-process: JSON for good data, one line and exit 2 for bad data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from moe_roma.cli import main

BENCH = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "benchmarks"
needs_bench = pytest.mark.skipif(
    not BENCH.is_dir(),
    reason=f"real benchmark files not found at {BENCH} (shared/ must sit beside the checkout)",
)


def inspect_json(capsys: pytest.CaptureFixture[str], *args: str) -> dict:
    assert main(["data", "inspect", *args, "--json"]) == 0
    out, err = capsys.readouterr()
    report = json.loads(out)
    if report["n_repeated_choices"]:  # published benchmarks with a repeated choice are named in one line
        assert (
            err.count("\n") == 1
            and f"{report['n_repeated_choices']} of" in err
            and "same choice twice" in err
        ), err
    else:
        assert err == ""
    return report


def test_inspect_json_on_a_small_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "mini.jsonl"
    records = [
        {"query": "q1", "choices": ["a", "b", "c", "d"], "gold": 3, "task": "x"},
        {"query": "q2", "choices": ["a", "b"], "gold": 0, "task": "y"},
        {"query": "q3", "choices": ["a", "b", "c", "d"], "gold": 1, "task": "x"},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    report = inspect_json(capsys, str(path))
    assert report["format"] == "llm-foundry" and report["detected"] is True
    assert report["n_examples"] == 3
    assert report["choice_histogram"] == {"2": 1, "4": 2}
    assert report["tasks"] == {"x": 2, "y": 1}
    assert report["answer_histogram"] == {"A": 1, "B": 1, "D": 1}
    forced = inspect_json(capsys, str(path), "--format", "llm-foundry", "--task", "all")
    assert forced["detected"] is False and forced["tasks"] == {"all": 3}


def test_inspect_text_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "wino.jsonl"
    path.write_text(
        json.dumps({"context_options": ["A met B so A", "A met B so B"], "continuation": "left.", "gold": 0})
    )
    assert main(["data", "inspect", str(path)]) == 0
    out = capsys.readouterr().out
    assert "llm-foundry (detected), 1 examples" in out
    assert "tasks (1): wino 1" in out and "2:       1" in out
    assert "partial scoring" in out


REAL = [
    ("arc_challenge.jsonl", "llm-foundry", {"4": 1172}),
    ("openbookqa/train.tsv", "obqa-tsv", {"4": 4957}),
    ("mmlu/test", "mmlu-csv", {"4": 14079}),
    ("winogrande.jsonl", "llm-foundry", {"2": 1267}),
    ("piqa.jsonl", "llm-foundry", {"2": 1838}),
    ("boolq.jsonl", "llm-foundry", {"2": 3270}),
]


@needs_bench
@pytest.mark.realdata
@pytest.mark.parametrize(("rel", "fmt", "histogram"), REAL, ids=[r[0] for r in REAL])
def test_inspect_real_files(rel: str, fmt: str, histogram: dict, capsys: pytest.CaptureFixture[str]) -> None:
    report = inspect_json(capsys, str(BENCH / rel))
    assert report["format"] == fmt
    assert report["n_examples"] == sum(histogram.values())
    assert report["choice_histogram"] == histogram
    assert sum(report["tasks"].values()) == report["n_examples"]
    if fmt == "mmlu-csv":
        assert report["n_tasks"] == 57 and report["tasks"]["professional_law"] == 1534


def _bad_cases(tmp: Path) -> dict[str, list[str]]:
    (tmp / "trunc.jsonl").write_text('{"query": "q", "choices": ["a", "b"], "gold": 0}\n{"query": "q", "cho')
    (tmp / "garbage.bin").write_bytes(bytes(range(256)) * 4)
    (tmp / "newline.jsonl").write_text(
        json.dumps({"question": "q", "choices": ["A) a", "B) b"], "answer": "E\nX"})
    )
    (tmp / "surrogate.jsonl").write_text('{"query": "\\udfff", "choices": ["a", "b"], "gold": 0}\n')
    (tmp / "good.jsonl").write_text(json.dumps({"query": "q", "choices": ["a", "b"], "gold": 0}))
    (tmp / "mmlu" / "test").mkdir(parents=True)
    (tmp / "mmlu" / "test" / "x_test.csv").write_text("q,a,b,A\n")
    return {
        "truncated-json": [str(tmp / "trunc.jsonl")],
        "binary-garbage": [str(tmp / "garbage.bin")],
        "newline-in-value": [str(tmp / "newline.jsonl")],
        "lone-surrogate": [str(tmp / "surrogate.jsonl")],
        "missing-path": [str(tmp / "missing.jsonl")],
        "unknown-format": [str(tmp / "good.jsonl"), "--format", "nope"],
        "wrong-format-forced": [str(tmp / "good.jsonl"), "--format", "roma-jsonl"],
        "top-mmlu-folder": [str(tmp / "mmlu")],
    }


@pytest.mark.parametrize(
    "case",
    [
        "truncated-json",
        "binary-garbage",
        "newline-in-value",
        "lone-surrogate",
        "missing-path",
        "unknown-format",
        "wrong-format-forced",
        "top-mmlu-folder",
    ],
)
@pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
def test_inspect_bad_input_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], case: str, as_json: bool
) -> None:
    args = _bad_cases(tmp_path)[case]
    status = main(["data", "inspect", *args, *(["--json"] if as_json else [])])
    out, err = capsys.readouterr()
    assert status == 2
    assert out == ""
    assert len(err.splitlines()) == 1, err
    assert err.startswith("roma data: error: ") and args[0] in err
    assert "Traceback" not in err


def test_data_without_action_prints_help_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["data"]) == 2
    assert "inspect" in capsys.readouterr().out
