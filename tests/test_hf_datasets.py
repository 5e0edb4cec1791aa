"""Hugging Face ``datasets`` as a data source: every preset on a small parquet file written with the
hub dataset's own column names and types, the ``hf:`` form on a local folder, field mappings, and
the one-sentence refusal of bad rows."""

from __future__ import annotations

import json

import pytest
from datasets import ClassLabel, Dataset, Features, Sequence, Value

from moe_roma.cli import main
from moe_roma.data.hf_source import parse_hub_spec
from moe_roma.data.loaders import load_examples
from moe_roma.data.presets import PRESETS, FieldMap, detect_preset
from moe_roma.io.errors import DataError

S, I32, I64, B = Value("string"), Value("int32"), Value("int64"), Value("bool")
LABELLED = {"text": Sequence(S), "label": Sequence(S)}

# preset -> (features as on the hub, two rows, expected (choices of row 0, answer of row 0, task of row 0))
CASES = {
    "openbookqa": (
        {"id": S, "question_stem": S, "choices": LABELLED, "answerKey": S},
        [
            {
                "id": "7-980",
                "question_stem": "The sun is",
                "choices": {"text": ["cold", "hot"], "label": ["A", "B"]},
                "answerKey": "B",
            },
            {
                "id": "7-981",
                "question_stem": "Ice is",
                "choices": {"text": ["cold", "hot"], "label": ["A", "B"]},
                "answerKey": "A",
            },
        ],
        (("cold", "hot"), 1, "openbookqa"),
    ),
    "sciq": (
        {
            "question": S,
            "distractor3": S,
            "distractor1": S,
            "distractor2": S,
            "correct_answer": S,
            "support": S,
        },
        [
            {
                "question": "What do plants make?",
                "distractor1": "iron",
                "distractor2": "salt",
                "distractor3": "oil",
                "correct_answer": "sugar",
                "support": "Photosynthesis makes sugar.",
            },
            {
                "question": "What is H2O?",
                "distractor1": "salt",
                "distractor2": "air",
                "distractor3": "oil",
                "correct_answer": "water",
                "support": "",
            },
        ],
        (None, None, "sciq"),
    ),
    "commonsense_qa": (
        {
            "id": S,
            "question": S,
            "question_concept": S,
            "choices": {"label": Sequence(S), "text": Sequence(S)},
            "answerKey": S,
        },
        [
            {
                "id": "c1",
                "question": "Where is a fish?",
                "question_concept": "fish",
                "choices": {"label": ["A", "B", "C"], "text": ["sea", "sky", "desk"]},
                "answerKey": "A",
            },
            {
                "id": "c2",
                "question": "Where is a bird?",
                "question_concept": "bird",
                "choices": {"label": ["A", "B", "C"], "text": ["sea", "sky", "desk"]},
                "answerKey": "B",
            },
        ],
        (("sea", "sky", "desk"), 0, "commonsense_qa"),
    ),
    "social_i_qa": (
        {"context": S, "question": S, "answerA": S, "answerB": S, "answerC": S, "label": S},
        [
            {
                "context": "Kai won.",
                "question": "How does Kai feel?",
                "answerA": "sad",
                "answerB": "glad",
                "answerC": "cold",
                "label": "2\n",
            },
            {
                "context": "Ann fell.",
                "question": "How does Ann feel?",
                "answerA": "hurt",
                "answerB": "glad",
                "answerC": "cold",
                "label": "1",
            },
        ],
        (("sad", "glad", "cold"), 1, "social_i_qa"),
    ),
    "arc": (
        {"id": S, "question": S, "choices": LABELLED, "answerKey": S},
        [
            {
                "id": "Mercury_1",
                "question": "Which is a metal?",
                "choices": {"text": ["wood", "iron", "glass", "clay"], "label": ["1", "2", "3", "4"]},
                "answerKey": "2",
            },
            {
                "id": "Mercury_2",
                "question": "Which is a gas?",
                "choices": {"text": ["air", "iron"], "label": ["A", "B"]},
                "answerKey": "A",
            },
        ],
        (("wood", "iron", "glass", "clay"), 1, "arc"),
    ),
    "piqa": (
        {"goal": S, "sol1": S, "sol2": S, "label": ClassLabel(names=["0", "1"])},
        [
            {"goal": "Dry a towel", "sol1": "hang it", "sol2": "soak it", "label": 0},
            {"goal": "Cool tea", "sol1": "boil it", "sol2": "wait", "label": 1},
        ],
        (("hang it", "soak it"), 0, "piqa"),
    ),
    "boolq": (
        {"question": S, "answer": B, "passage": S},
        [
            {"question": "is the sky blue", "answer": True, "passage": "The sky is blue."},
            {"question": "is ice hot", "answer": False, "passage": "Ice is cold."},
        ],
        (("no", "yes"), 1, "boolq"),
    ),
    "winogrande": (
        {"sentence": S, "option1": S, "option2": S, "answer": S},
        [
            {
                "sentence": "The cup fell off the shelf because _ was tilted.",
                "option1": "the cup",
                "option2": "the shelf",
                "answer": "2",
            },
            {
                "sentence": "Amy paid Bo because _ owed money.",
                "option1": "Amy",
                "option2": "Bo",
                "answer": "1",
            },
        ],
        (
            ("The cup fell off the shelf because the cup", "The cup fell off the shelf because the shelf"),
            1,
            "winogrande",
        ),
    ),
    "hellaswag": (
        {
            "ind": I32,
            "activity_label": S,
            "ctx_a": S,
            "ctx_b": S,
            "ctx": S,
            "endings": Sequence(S),
            "source_id": S,
            "split": S,
            "split_type": S,
            "label": S,
        },
        [
            {
                "ind": 4,
                "activity_label": "Cooking",
                "ctx_a": "A man cracks eggs.",
                "ctx_b": "he",
                "ctx": "A man cracks eggs. he",
                "endings": ["whisks them.", "flies.", "sleeps.", "sings."],
                "source_id": "x",
                "split": "val",
                "split_type": "indomain",
                "label": "0",
            },
            {
                "ind": 5,
                "activity_label": "Sport",
                "ctx_a": "A girl runs.",
                "ctx_b": "she",
                "ctx": "A girl runs. she",
                "endings": ["melts.", "jumps.", "boils.", "reads."],
                "source_id": "y",
                "split": "val",
                "split_type": "indomain",
                "label": "1",
            },
        ],
        (("whisks them.", "flies.", "sleeps.", "sings."), 0, "hellaswag"),
    ),
    "mmlu": (
        {
            "question": S,
            "subject": S,
            "choices": Sequence(S),
            "answer": ClassLabel(names=["A", "B", "C", "D"]),
        },
        [
            {
                "question": "2 + 2 =",
                "subject": "elementary_mathematics",
                "choices": ["3", "4", "5", "6"],
                "answer": 1,
            },
            {
                "question": "3 + 3 =",
                "subject": "elementary_mathematics",
                "choices": ["6", "4", "5", "7"],
                "answer": 0,
            },
        ],
        (("3", "4", "5", "6"), 1, "elementary_mathematics"),
    ),
    "super_glue_boolq": (
        {"question": S, "passage": S, "idx": I32, "label": ClassLabel(names=["False", "True"])},
        [
            {"question": "is ice cold", "passage": "Ice is cold.", "idx": 0, "label": 1},
            {"question": "is fire cold", "passage": "Fire is hot.", "idx": 1, "label": 0},
        ],
        (("no", "yes"), 1, "super_glue_boolq"),
    ),
    "super_glue_copa": (
        {
            "premise": S,
            "choice1": S,
            "choice2": S,
            "question": S,
            "idx": I32,
            "label": ClassLabel(names=["choice1", "choice2"]),
        },
        [
            {
                "premise": "The man fell.",
                "choice1": "He slipped.",
                "choice2": "He sang.",
                "question": "cause",
                "idx": 0,
                "label": 0,
            },
            {
                "premise": "It rained.",
                "choice1": "The ground dried.",
                "choice2": "The ground got wet.",
                "question": "effect",
                "idx": 1,
                "label": 1,
            },
        ],
        (("He slipped.", "He sang."), 0, "copa"),
    ),
    "super_glue_multirc": (
        {
            "paragraph": S,
            "question": S,
            "answer": S,
            "idx": {"paragraph": I32, "question": I32, "answer": I32},
            "label": ClassLabel(names=["False", "True"]),
        },
        [
            {
                "paragraph": "Tom has a dog.",
                "question": "What does Tom have?",
                "answer": "a dog",
                "idx": {"paragraph": 0, "question": 0, "answer": 0},
                "label": 1,
            },
            {
                "paragraph": "Tom has a dog.",
                "question": "What does Tom have?",
                "answer": "a cat",
                "idx": {"paragraph": 0, "question": 0, "answer": 1},
                "label": 0,
            },
        ],
        (("no", "yes"), 1, "multirc"),
    ),
    "bigbench": (
        {
            "idx": I32,
            "inputs": S,
            "targets": Sequence(S),
            "multiple_choice_targets": Sequence(S),
            "multiple_choice_scores": Sequence(I32),
        },
        [
            {
                "idx": 0,
                "inputs": "Q: Is a cat an animal?",
                "targets": ["yes"],
                "multiple_choice_targets": ["no", "yes"],
                "multiple_choice_scores": [0, 1],
            },
            {
                "idx": 1,
                "inputs": "Q: Is a rock alive?",
                "targets": ["no"],
                "multiple_choice_targets": ["no", "yes"],
                "multiple_choice_scores": [1, 0],
            },
        ],
        (("no", "yes"), 1, "bigbench"),
    ),
    "knowref": (
        {
            "annotation_strength": S,
            "candidate_0": S,
            "candidate_1": S,
            "original_sentence": S,
            "swapped_sentence": S,
            "correct_candidate": S,
        },
        [
            {
                "annotation_strength": "5",
                "candidate_0": "Ann",
                "candidate_1": "Bo",
                "original_sentence": "x",
                "swapped_sentence": "Ann thanked Bo because [she] was helped.",
                "correct_candidate": "candidate_0",
            },
            {
                "annotation_strength": "4",
                "candidate_0": "Ann",
                "candidate_1": "Bo",
                "original_sentence": "y",
                "swapped_sentence": "Ann paid Bo because [he] did the work.",
                "correct_candidate": "candidate_1",
            },
        ],
        (("Ann", "Bo"), 0, "knowref"),
    ),
}


def write_parquet(path, features: dict, rows: list[dict]):
    Dataset.from_list(rows, features=Features(features)).to_parquet(str(path))
    return path


def test_every_preset_has_a_case():
    assert set(CASES) == set(PRESETS)


@pytest.mark.parametrize("name", sorted(CASES))
def test_preset_is_detected_and_reads_the_hub_schema(tmp_path, name):
    features, rows, (choices, answer, task) = CASES[name]
    path = write_parquet(tmp_path / f"{name}.parquet", features, rows)
    assert detect_preset(list(features)).name == name
    examples = load_examples(path)
    assert len(examples) == 2 and examples[0].meta["preset"] == name and examples[0].task == task
    if choices is not None:
        assert examples[0].choices == choices and examples[0].answer == answer
    assert load_examples(path, preset=name) == examples  # by name gives the same


def test_sciq_places_the_answer_by_a_hash_not_always_last(tmp_path):
    features, rows, _ = CASES["sciq"]
    rows = [dict(rows[0], question=f"Question {i}?") for i in range(12)]
    examples = load_examples(write_parquet(tmp_path / "sciq.parquet", features, rows))
    assert all(ex.choices[ex.answer] == "sugar" for ex in examples)
    assert len({ex.answer for ex in examples}) > 1
    assert examples[0].question.startswith("Photosynthesis makes sugar.\n")


def test_winogrande_is_partial_scoring(tmp_path):
    features, rows, _ = CASES["winogrande"]
    ex = load_examples(write_parquet(tmp_path / "wg.parquet", features, rows))[0]
    assert ex.continuation == "was tilted." and ex.question == rows[0]["sentence"]


def test_hf_spec_on_a_local_folder_with_splits(tmp_path):
    features, rows, _ = CASES["arc"]
    folder = tmp_path / "arc"
    folder.mkdir()
    write_parquet(folder / "train-00000-of-00001.parquet", features, rows)
    write_parquet(folder / "test-00000-of-00001.parquet", features, rows[:1])
    assert len(load_examples(f"hf:{folder}:test")) == 1
    with pytest.raises(DataError, match=r"has splits \['train', 'test'\]; name one, e.g. hf:.*/arc::train"):
        load_examples(f"hf:{folder}")


@pytest.mark.parametrize("suffix", [".parquet", ".csv", "folder"])
def test_a_local_file_replaced_with_its_time_kept_is_read_anew(tmp_path, suffix, monkeypatch):
    """``datasets`` caches by path and modification time: the file as it is now must be read, and none
    of it copied into the user's cache."""
    import os

    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "cache"))
    features, rows, _ = CASES["arc"]
    folder = tmp_path / "data"
    folder.mkdir()
    path = folder / ("train.csv" if suffix == ".csv" else "train.parquet")
    source = f"hf:{folder}:train" if suffix == "folder" else path
    fields = FieldMap("q", "a,b", "gold") if suffix == ".csv" else None
    for i, gold in enumerate(("A", "B")):
        if suffix == ".csv":
            path.write_text(f"q,a,b,gold\nSky colour?,blue,red,{gold}\n")
        else:
            write_parquet(path, features, [dict(rows[0], answerKey="2" if gold == "A" else "3")])
        if i == 0:
            first = load_examples(source, fields=fields)[0].answer
            times = (path.stat().st_atime_ns, path.stat().st_mtime_ns)
        else:
            os.utime(path, ns=times)
            assert load_examples(source, fields=fields)[0].answer != first
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").rglob("*.arrow"))


def test_save_to_disk_folders(tmp_path):
    from datasets import DatasetDict

    features, rows, _ = CASES["piqa"]
    ds = Dataset.from_list(rows, features=Features(features))
    ds.save_to_disk(str(tmp_path / "one"))
    assert [ex.answer for ex in load_examples(tmp_path / "one")] == [0, 1]
    DatasetDict({"train": ds, "validation": ds}).save_to_disk(str(tmp_path / "two"))
    with pytest.raises(DataError, match=r"has splits \['train', 'validation'\]; name one, e.g. .*two/train"):
        load_examples(tmp_path / "two")
    assert len(load_examples(tmp_path / "two" / "validation")) == 2


def test_parse_hub_spec():
    assert parse_hub_spec("hf:allenai/ai2_arc:ARC-Easy") == ("allenai/ai2_arc", "ARC-Easy", None)
    assert parse_hub_spec("hf:cais/mmlu:all:test") == ("cais/mmlu", "all", "test")
    assert parse_hub_spec("hf:x/y::validation") == ("x/y", None, "validation")
    with pytest.raises(DataError, match="hf:NAME"):
        parse_hub_spec("hf:a:b:c:d")


def test_field_mapping_of_an_unknown_schema_from_json(tmp_path):
    path = tmp_path / "mine.jsonl"
    path.write_text(
        "\n".join(
            json.dumps(r)
            for r in [
                {"q": "Sky colour?", "opts": ["blue", "red"], "gold": "blue", "ctx": "Look up."},
                {"q": "Grass colour?", "opts": ["blue", "green"], "gold": 1, "ctx": "Look down."},
            ]
        )
        + "\n"
    )
    examples = load_examples(path, fields=FieldMap("q", "opts", "gold", context="ctx"))
    assert [ex.answer for ex in examples] == [0, 1] and examples[0].question == "Look up.\nSky colour?"


def test_csv_with_a_field_mapping_of_several_choice_columns(tmp_path):
    path = tmp_path / "mine.csv"
    path.write_text("q,a,b,c,gold\nSky colour?,red,blue,green,B\nGrass colour?,red,blue,green,C\n")
    examples = load_examples(path, fields=FieldMap("q", "a,b,c", "gold"))
    assert [(ex.choices, ex.answer) for ex in examples] == [
        (("red", "blue", "green"), 1),
        (("red", "blue", "green"), 2),
    ]


def test_digit_answers_are_read_by_one_rule_per_file(tmp_path):
    """A digit string is a choice's text in every row, or an index in every row: never both in one file."""
    mixed = tmp_path / "mixed.jsonl"
    rows = [
        {"q": "Sky colour?", "opts": ["red", "blue", "green"], "gold": "1"},
        {
            "q": "Which is first?",
            "opts": ["1", "2", "0"],
            "gold": "0",
        },  # "0" is a choice here; the rule is index
    ]
    mixed.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert [ex.answer for ex in load_examples(mixed, fields=FieldMap("q", "opts", "gold"))] == [1, 0]
    texts = tmp_path / "texts.jsonl"
    rows = [
        {"q": "Two plus one?", "opts": ["1", "3", "5"], "gold": "3"},
        {"q": "Four plus one?", "opts": ["5", "7"], "gold": "5"},
    ]
    texts.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert [ex.answer for ex in load_examples(texts, fields=FieldMap("q", "opts", "gold"))] == [1, 0]


def test_a_field_mapping_keeps_the_rows_ids(tmp_path):
    path = tmp_path / "mine.parquet"
    rows = [
        {"id": "q-7", "q": "Sky colour?", "opts": ["red", "blue"], "gold": 1},
        {"id": "q-9", "q": "Grass colour?", "opts": ["green", "blue"], "gold": 0},
    ]
    Dataset.from_list(rows).to_parquet(str(path))
    assert [ex.id for ex in load_examples(path, fields=FieldMap("q", "opts", "gold"))] == ["q-7", "q-9"]


def test_json_in_a_hub_schema_is_read_through_its_preset(tmp_path):
    path = tmp_path / "piqa.jsonl"
    path.write_text(
        json.dumps({"goal": "Dry a towel", "sol1": "hang it", "sol2": "soak it", "label": 0}) + "\n"
    )
    assert load_examples(path)[0].meta["preset"] == "piqa"


@pytest.mark.parametrize(
    ("name", "row", "problem"),
    [
        ("commonsense_qa", {"answerKey": ""}, "row 1: 'answerKey' is empty: no answer label"),
        ("hellaswag", {"label": ""}, "row 1: 'label' is empty: no answer label"),
        ("piqa", {"label": -1}, "row 1: 'label' is -1: no answer label"),
        ("arc", {"answerKey": "E"}, "row 1: 'answerKey' is 'E', not one of the labels"),
        ("mmlu", {"choices": ["only one"]}, "row 1: choices has 1 item; a question needs at least 2"),
    ],
)
def test_bad_rows_are_refused_in_one_sentence(tmp_path, capsys, name, row, problem):
    features, rows, _ = CASES[name]
    features = dict(features)
    if name == "piqa":
        features["label"] = I64  # the hub's test split holds -1, which a ClassLabel cannot
    path = write_parquet(tmp_path / f"{name}.parquet", features, [rows[0], {**rows[1], **row}])
    with pytest.raises(DataError, match=problem):
        load_examples(path)
    capsys.readouterr()
    assert main(["data", "inspect", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and str(path) in err and problem.split(":")[0] in err


def test_cli_inspect_and_options(tmp_path, capsys):
    features, rows, _ = CASES["social_i_qa"]
    path = write_parquet(tmp_path / "siqa.parquet", features, rows)
    assert main(["data", "inspect", str(path), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["format"] == "datasets[social_i_qa]" and report["n_examples"] == 2
    assert (
        main(
            [
                "data",
                "inspect",
                str(path),
                "--question-field",
                "question",
                "--choices-field",
                "answerA,answerB,answerC",
                "--answer-field",
                "label",
                "--context-field",
                "context",
                "--json",
            ]
        )
        == 0
    )
    report = json.loads(capsys.readouterr().out)
    # label "2\n" read as an index 2 by a plain field mapping: the preset knows SocialIQA counts from 1
    assert report["format"] == "datasets[fields]" and report["answer_histogram"] == {"B": 1, "C": 1}
    assert main(["data", "inspect", str(path), "--question-field", "question"]) == 2
    assert "needs --choices-field and --answer-field too" in capsys.readouterr().err
    assert main(["data", "inspect", str(path), "--preset", "sciqq"]) == 2
    assert "unknown preset 'sciqq'; did you mean 'sciq'?" in capsys.readouterr().err
    assert main(["data", "inspect", "hf:no-such-org/no-such-dataset:train"]) == 2
    assert "datasets could not load it" in capsys.readouterr().err


def test_docstring_examples():
    import doctest

    from moe_roma.data import hf_source, presets

    for module in (presets, hf_source):
        assert doctest.testmod(module).failed == 0, module.__name__
