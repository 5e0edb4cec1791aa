"""The downstream testbed: its splits, its general-text corpus, the committed model and its measurements."""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from pathlib import Path

import pytest

from moe_roma.data.example import MCExample
from moe_roma.data.prompts import continuation_context
from moe_roma.io.errors import RomaError
from moe_roma.testbed import load_testbed_splits, testbed_model_path, testbed_split_names
from moe_roma.testbed.downstream import (
    EVAL_SPLITS,
    SPLITS,
    TRAIN_LARGE_SIZE,
    CorpusConfig,
    _even_quota,
    build_downstream_suite,
    build_train_large,
    content_keys,
    has_qa_format,
    pretrain_corpus,
    pretrain_corpus_keys,
    qa_format_rate,
)
from moe_roma.testbed.tasks import FAMILY_BY_NAME, HELDOUT_FAMILIES, TRAIN_FAMILIES, example_to_record

SMALL_CORPUS = CorpusConfig(family_docs=120, filler_docs=100, knowledge_repeats=1)
MODEL = testbed_model_path("downstream")
# The targets the design was calibrated to (docs/testbed.md, "How the downstream testbed was calibrated").
BASE_BAND = (0.35, 0.75)
MIN_ORACLE_GAP = 0.10
TRAIN_SHARE_BAND = (0.40, 0.75)


@pytest.fixture(scope="module")
def suite() -> dict[str, list[MCExample]]:
    return load_testbed_splits(0, testbed="downstream")


@pytest.fixture(scope="module")
def corpus() -> list[str]:
    return pretrain_corpus(0)


@pytest.fixture(scope="module")
def train_large() -> list[MCExample]:
    return build_train_large(0)


@pytest.fixture(scope="module")
def info() -> dict:
    return json.loads((MODEL / "build_info.json").read_text())


# --------------------------------------------------------------------------- splits


def test_downstream_is_the_one_default_testbed() -> None:
    """One default everywhere (issue 26): the library functions, every `roma testbed` action, `roma demo`
    and an experiment file's `data: {testbed: true}` all mean the downstream testbed."""
    import argparse

    from moe_roma.cli import build_parser
    from moe_roma.experiments.config import DataConfig
    from moe_roma.experiments.demo import DEMO_CONFIG, DEMO_CONFIGS
    from moe_roma.testbed import DEFAULT_TESTBED

    assert DEFAULT_TESTBED == "downstream"
    assert testbed_model_path() == MODEL != testbed_model_path("in-domain")
    assert testbed_split_names() == testbed_split_names("downstream") == SPLITS
    assert set(load_testbed_splits(0)) == set(SPLITS)
    assert "pretrain" in load_testbed_splits(0, include_pretrain=False, testbed="in-domain")  # unchanged
    assert DataConfig.from_dict({"testbed": True}).testbed == "downstream"
    assert DEMO_CONFIGS[DEFAULT_TESTBED] == DEMO_CONFIG
    parser = build_parser()
    subs = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    testbed = next(a for a in subs.choices["testbed"]._actions if isinstance(a, argparse._SubParsersAction))
    defaults = {name: p.get_default("testbed") for name, p in testbed.choices.items()}
    assert defaults == dict.fromkeys(testbed.choices, "downstream") and len(defaults) >= 3, defaults
    assert parser.parse_args(["demo"]).testbed in (None, "downstream")
    with pytest.raises(ValueError):
        testbed_model_path("nope")


def test_deterministic_by_seed(suite: dict[str, list[MCExample]]) -> None:
    again = build_downstream_suite(0)
    assert again == suite
    for split in SPLITS:
        assert [e.meta for e in again[split]] == [e.meta for e in suite[split]]
    other = build_downstream_suite(1)
    assert [e.question for e in other["in_dist"]] != [e.question for e in suite["in_dist"]]
    assert pretrain_corpus(3, SMALL_CORPUS) == pretrain_corpus(3, SMALL_CORPUS)
    assert pretrain_corpus(3, SMALL_CORPUS) != pretrain_corpus(4, SMALL_CORPUS)


def test_split_shapes(suite: dict[str, list[MCExample]]) -> None:
    assert list(suite) == list(SPLITS)
    sizes = {s: len(v) for s, v in suite.items()}
    assert sizes == {"train": 960, "validation": 240, "in_dist": 360, "shifted": 360, "heldout_tasks": 320}
    for split, items in suite.items():
        fams = {ex.task for ex in items}
        assert fams == set(HELDOUT_FAMILIES if split == "heldout_tasks" else TRAIN_FAMILIES), split
        for ex in items:
            assert len(ex.choices) == 4 and len(set(ex.choices)) == 4 and 0 <= ex.answer < 4
            assert not ex.meta.get("context")  # scored after the downstream prompt format
            assert continuation_context(ex).startswith("Question: ") and continuation_context(ex).endswith(
                "\nAnswer:"
            )
            wording = ex.meta["template"].split(":")[0]
            assert wording == ("shifted" if split == "shifted" else "seen"), (split, ex.meta)
    ids = [ex.id for items in suite.values() for ex in items]
    assert len(ids) == len(set(ids))


def test_content_keys_are_disjoint(suite: dict[str, list[MCExample]]) -> None:
    keys = {s: content_keys(v) for s, v in suite.items()}
    for s, k in keys.items():
        assert len(k) == len(suite[s]), s  # no key twice inside a split either
    names = list(keys)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            assert not keys[a] & keys[b], (a, b)
    corpus_keys = pretrain_corpus_keys(0)
    assert len(corpus_keys) > 10_000
    for s, k in keys.items():
        assert not k & corpus_keys, s


def test_no_evaluation_question_in_the_corpus(suite: dict[str, list[MCExample]], corpus: list[str]) -> None:
    text = "\n".join(corpus)
    for split in ("train", "validation", *EVAL_SPLITS):
        for ex in suite[split]:
            # "5 years is how many months?" is inside "15 years is how many months?": whole words only.
            if ex.question in text:
                assert not re.search(r"(?<![\w])" + re.escape(ex.question), text), (split, ex.question)


def _digest(rows) -> str:
    h = hashlib.sha256()
    for row in rows:
        h.update(json.dumps(row, sort_keys=True).encode())
    return h.hexdigest()


def test_the_frozen_splits_and_corpus_are_unchanged(
    suite: dict[str, list[MCExample]], corpus: list[str]
) -> None:
    # The committed model was built and measured on exactly these; train_large must not move them.
    rows = ([s, example_to_record(ex), ex.meta] for s, items in suite.items() for ex in items)
    assert _digest(rows) == "a164975c59ac75842ba581c1426ca42600489b98171132b3ca572b9d2b85180b"
    assert hashlib.sha256("\n".join(corpus).encode()).hexdigest() == (
        "d439bb4d0151f8a36eb2fc5eae6ce43609b679091ce91f39722687ff27b9e95c"
    )


# train_large: 49 000 items; the families whose fresh content the splits and corpus used up give none.
TRAIN_LARGE_COUNTS = {
    "addition": 604,
    "comparison": 9680,
    "parity": 9680,
    "counting": 9680,
    "alphabetical": 9678,
    "category": 9678,
}


def test_train_large_is_fresh_content_of_the_training_families(
    suite: dict[str, list[MCExample]], train_large: list[MCExample]
) -> None:
    assert len(train_large) == TRAIN_LARGE_SIZE == 49_000
    assert Counter(ex.task for ex in train_large) == TRAIN_LARGE_COUNTS
    keys = content_keys(train_large)
    assert len(keys) == len(train_large)  # no key twice
    for split, items in suite.items():
        assert not keys & content_keys(items), split
    assert not keys & pretrain_corpus_keys(0)
    assert all(ex.meta["template"].startswith("seen:") for ex in train_large)
    ids = {ex.id for ex in train_large}
    assert len(ids) == len(train_large) and not ids & {ex.id for items in suite.values() for ex in items}
    # Pinned, so that the runs trained on it can always be regenerated.
    assert _digest([example_to_record(ex), ex.meta] for ex in train_large) == (
        "c8cb26a1a5ad4c815f8d0b503ba8c15a61046532c1de8705e4ce5e2b414d7c91"
    )


def test_train_large_sizes_are_nested_prefixes(train_large: list[MCExample]) -> None:
    small = build_train_large(0, size=960)
    assert small == train_large[:960]
    assert {ex.task for ex in small} == set(TRAIN_LARGE_COUNTS)  # the full split's mix, not one family first
    for bad in (0, TRAIN_LARGE_SIZE + 1, True, 2.5):
        with pytest.raises(RomaError, match="train_large size must be an integer from 1 to 49000"):
            build_train_large(0, size=bad)


def test_even_quota_gives_what_a_full_family_cannot_take_to_the_others() -> None:
    assert _even_quota(10, ["a", "b", "c"], {}) == {"a": 4, "b": 3, "c": 3}
    assert _even_quota(10, ["a", "b", "c"], {"a": 1}) == {"a": 1, "b": 5, "c": 4}
    # Every family exhausted: fewer than asked.
    assert _even_quota(10, ["a", "b"], {"a": 2, "b": 3}) == {"a": 2, "b": 3}


# --------------------------------------------------------------------------- the corpus


def test_downstream_format_is_rare_in_the_corpus(corpus: list[str]) -> None:
    # Measured on the shipped corpus (seed 0, default mix): 412 of 26 243 documents, 1.57%.
    assert len(corpus) == 26_243
    assert sum(has_qa_format(d) for d in corpus) == 412
    assert qa_format_rate(corpus) == pytest.approx(412 / 26_243)
    rest = [d for d in corpus if not has_qa_format(d)]
    assert not any(re.search(r"answer\s*:", d, re.IGNORECASE) for d in rest)
    # The prompt's words are ordinary words of the corpus; only their arrangement is rare.
    words = re.findall(r"\w+", " ".join(rest).lower())
    assert words.count("question") > 500 and words.count("answer") > 1000
    # The detector finds the format where it is present, and qa_rate=0 leaves it out entirely.
    assert has_qa_format("Question: What is 2 plus 3?\nAnswer: 5")
    assert not has_qa_format("Exercise: What is 2 plus 3? Solution: 5.")
    assert (
        qa_format_rate(pretrain_corpus(0, CorpusConfig(family_docs=120, filler_docs=100, qa_rate=0.0))) == 0.0
    )


def test_corpus_holds_every_family_as_text(corpus: list[str]) -> None:
    cues = {
        "addition": " plus ",
        "subtraction": " minus ",
        "multiplication": " times ",
        "comparison": "largest",
        "parity": " even",
        "sequence": "next number",
        "counting": " words",
        "letter_order": "alphabet",
        "calendar": " comes ",
        "alphabetical": "alphabetical",
        "category": " is a ",
        "odd_one_out": "odd one out",
        "geography": "capital",
        "antonyms": "opposite",
        "unit_conversion": " minutes ",
        "word_problems": " has ",
    }
    assert set(cues) == set(FAMILY_BY_NAME)
    for fam, cue in cues.items():
        assert sum(cue in d for d in corpus) > 50, fam


# --------------------------------------------------------------------------- the committed model


def test_model_folder_loads_and_matches_build_info(info: dict) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, OlmoeForCausalLM

    total = sum(p.stat().st_size for p in MODEL.iterdir() if p.is_file())
    assert total <= 40 * 2**20, f"model folder is {total / 2**20:.1f} MiB"
    model = AutoModelForCausalLM.from_pretrained(MODEL)
    assert isinstance(model, OlmoeForCausalLM)
    cfg, bc = model.config, info["build_config"]
    assert cfg.num_hidden_layers == bc["num_layers"] >= 8
    assert cfg.num_experts == bc["num_experts"] and 16 <= cfg.num_experts <= 32
    assert cfg.num_experts_per_tok == bc["top_k"] and 2 <= cfg.num_experts_per_tok <= 4
    assert cfg.hidden_size == bc["hidden_size"] and cfg.intermediate_size == bc["intermediate_size"]
    assert sum(p.numel() for p in model.parameters()) == info["parameters"]
    tok = AutoTokenizer.from_pretrained(MODEL)
    assert len(tok) == info["vocab_size"] == cfg.vocab_size
    enc = tok("Question: What is 2 plus 3?\nAnswer:", return_tensors="pt", add_special_tokens=False)
    assert tok.unk_token_id not in enc["input_ids"][0].tolist()
    with torch.no_grad():
        assert model(**enc).logits.shape[-1] == len(tok)


def test_build_info_meets_the_design_targets(info: dict) -> None:
    assert info["testbed"] == "downstream"
    assert info["qa_format_rate"] == pytest.approx(412 / 26_243)
    assert info["split_sizes"] == {s: n for s, n in zip(SPLITS, (960, 240, 360, 360, 320))}
    lo, hi = BASE_BAND
    for split in EVAL_SPLITS:
        base = info["accuracy"][split]["all"]
        assert lo <= base <= hi, (split, base)
        oracle = info["oracle"][split]
        assert abs(oracle["base_accuracy"] - base) < 0.02, split  # the two scorers agree
        assert oracle["accuracy"] - oracle["base_accuracy"] >= MIN_ORACLE_GAP, (split, oracle)
        assert oracle["layers"] == list(
            range(info["build_config"]["num_layers"] - 5, info["build_config"]["num_layers"])
        )
    lo, hi = TRAIN_SHARE_BAND
    assert lo <= info["train_successful_share"] <= hi
    assert info["train_successful_share"] == info["accuracy"]["train"]["all"]


def test_export_command(tmp_path: Path) -> None:
    from moe_roma.cli import main

    assert (
        main(
            [
                "testbed",
                "export",
                "--testbed",
                "downstream",
                "--out",
                str(tmp_path),
                "--splits",
                "validation",
                "heldout_tasks",
            ]
        )
        == 0
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["heldout_tasks.jsonl", "validation.jsonl"]
    rows = [json.loads(x) for x in (tmp_path / "validation.jsonl").read_text().splitlines()]
    assert len(rows) == 240 and set(rows[0]) == {"id", "task", "query", "choices", "gold"}
    assert (
        main(["testbed", "export", "--testbed", "downstream", "--out", str(tmp_path), "--splits", "nope"])
        == 2
    )


def test_export_command_writes_train_large_prefixes(
    tmp_path: Path, train_large: list[MCExample], capsys
) -> None:
    from moe_roma.cli import main

    assert (
        main(
            [
                "testbed",
                "export",
                "--testbed",
                "downstream",
                "--out",
                str(tmp_path),
                "--splits",
                "train_large",
                "--train-size",
                "50",
            ]
        )
        == 0
    )
    rows = [json.loads(x) for x in (tmp_path / "train_large.jsonl").read_text().splitlines()]
    assert rows == [example_to_record(ex) for ex in train_large[:50]]
    assert (
        main(["testbed", "export", "--testbed", "downstream", "--out", str(tmp_path), "--train-size", "50"])
        == 2
    )
    assert "add it to --splits" in capsys.readouterr().err
    assert (
        main(
            ["testbed", "export", "--testbed", "in-domain", "--out", str(tmp_path), "--splits", "train_large"]
        )
        == 2
    )  # in-domain has none


@pytest.mark.slow
def test_base_accuracy_matches_build_info(suite: dict[str, list[MCExample]], info: dict) -> None:
    """Re-score every split with the committed model: the recorded accuracies are the ones it gives."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from moe_roma.testbed.scoring import accuracy_by_task

    torch.set_num_threads(1)
    model = AutoModelForCausalLM.from_pretrained(MODEL, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(MODEL)
    for split in (*EVAL_SPLITS, "train"):
        acc = accuracy_by_task(model, tok, suite[split])
        assert abs(acc["all"] - info["accuracy"][split]["all"]) < 0.02, (split, acc["all"])
        if split in EVAL_SPLITS:
            assert BASE_BAND[0] <= acc["all"] <= BASE_BAND[1], (split, acc["all"])


@pytest.mark.slow
def test_eval_command_reports_the_oracle_gap_per_split(capsys) -> None:
    from moe_roma.cli import main

    args = ["testbed", "eval", "--splits", "validation", "--oracle", "--oracle-steps", "2", "--threads", "1"]
    assert main([*args, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    oracle = out["oracle"]["validation"]
    assert oracle["n"] == 240 and oracle["steps"] == 2 and oracle["layers"] == [3, 4, 5, 6, 7]
    assert abs(oracle["base_accuracy"] - out["accuracy"]["validation"]["all"]) < 0.02  # the two scorers agree
    assert oracle["accuracy"] >= oracle["base_accuracy"] and oracle["n_fixed"] > 0
