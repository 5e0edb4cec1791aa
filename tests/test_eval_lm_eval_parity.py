"""``roma eval`` and lm-evaluation-harness give identical acc and acc_norm on the same items.

One tiny random-but-confident MoE model and a byte-level BPE tokenizer (trained here, offline)
score the same data both ways: our scorer in process, and lm-evaluation-harness's HFLM on the
task that ``roma lm-eval-task`` exports. The data mixes ordinary items (2-5 choices, some long
enough to be truncated) with WinoGrande-style partial-scoring items, so the export is a group
of two tasks; letter scoring is exported and compared too.
"""

from __future__ import annotations

import json
import random

import pytest
import torch
import transformers

from helpers.tiny_models import COMMON, FAMILIES
from moe_roma.cli import main
from moe_roma.data.loaders import load_examples
from moe_roma.scoring.engine import evaluate

pytest.importorskip("accelerate", reason="lm-evaluation-harness's HFLM needs accelerate")

WORDS = (  # noqa: SIM905
    "the a cat dog bird fish red blue green big small runs jumps sleeps eats under over near "
    "house tree river what which who is was can does sun moon star water fire stone light dark"
).split()


def _sentence(rng: random.Random, lo: int, hi: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(lo, hi)))


def make_data(rng: random.Random) -> tuple[list[dict], list[dict]]:
    plain = []
    for i in range(40):
        n = 2 + i % 4
        # Two items are long enough (> 128 tokens with the template) to be cut from the left.
        query = _sentence(rng, 140, 150) if i in (7, 23) else _sentence(rng, 3, 10)
        choices = [_sentence(rng, 1, 6) for _ in range(n)]
        plain.append(
            {"id": f"q{i}", "query": query.capitalize() + "?", "choices": choices, "gold": rng.randrange(n)}
        )
    partial = []
    for i in range(20):
        stem = _sentence(rng, 3, 8)
        options = [f"{stem} {rng.choice(WORDS)}", f"{stem} {rng.choice(WORDS)} {rng.choice(WORDS)}"]
        partial.append(
            {
                "id": f"w{i}",
                "context_options": options,
                "continuation": _sentence(rng, 1, 5) + ".",
                "gold": rng.randrange(2),
            }
        )
    return plain, partial


def build_tokenizer(corpus: list[str]) -> transformers.PreTrainedTokenizerFast:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<pad>", "<s>", "</s>"],
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    # The letters repeated so that " A" .. " E" become single tokens, as in real tokenizers.
    tok.train_from_iterator(corpus + ["Question: Answer: A B C D E"] * 50, trainer)
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>"
    )


def build_model(vocab_size: int) -> transformers.PreTrainedModel:
    config_name, model_name, extra = FAMILIES["olmoe"]
    config = getattr(transformers, config_name)(
        **{**COMMON, "vocab_size": vocab_size, "num_hidden_layers": 2, **extra}
    )
    torch.manual_seed(0)
    model = getattr(transformers, model_name)(config).float().eval()
    with torch.no_grad():
        model.lm_head.weight.mul_(30)  # confident: log-likelihoods far apart, no near-ties
    return model


@pytest.mark.slow
def test_acc_and_acc_norm_identical_to_lm_evaluation_harness(tmp_path, monkeypatch, capsys):
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.setenv(var, "1")
    rng = random.Random(0)
    plain, partial = make_data(rng)
    data = tmp_path / "mixed.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in plain + partial))
    corpus = [r["query"] for r in plain] + [c for r in plain for c in r["choices"]]
    corpus += [o for r in partial for o in r["context_options"]] + [r["continuation"] for r in partial]
    tok = build_tokenizer(corpus)
    assert all(len(tok(f" {x}", add_special_tokens=False)["input_ids"]) == 1 for x in "ABCDE")
    model = build_model(len(tok))

    # Export through the command, as a user would.
    tasks = tmp_path / "tasks"
    assert main(["lm-eval-task", "--data", str(data), "--out", str(tasks), "--name", "mix"]) == 0
    assert (
        main(
            [
                "lm-eval-task",
                "--data",
                str(data),
                "--out",
                str(tasks),
                "--name",
                "let",
                "--scoring",
                "letter",
                "--limit",
                "40",
            ]
        )
        == 0
    )
    assert {p.name for p in tasks.iterdir()} >= {
        "mix.yaml",
        "mix_choice.yaml",
        "mix_partial.yaml",
        "let.yaml",
    }
    capsys.readouterr()

    examples = load_examples(data)
    ours = {
        "mix_choice": evaluate(
            model, tok, examples[:40], scoring="continuation", batch_size=8, progress=False
        ),
        "mix_partial": evaluate(
            model, tok, examples[40:], scoring="continuation", batch_size=8, progress=False
        ),
        "let": evaluate(model, tok, examples[:40], scoring="letter", batch_size=8, progress=False),
    }
    both = evaluate(model, tok, examples, scoring="continuation", batch_size=8, progress=False)
    # A non-trivial model: predictions vary, and the long items were truncated, not dropped.
    assert len({it.pred for it in ours["mix_choice"].items}) > 1
    assert len({it.pred for it in ours["mix_partial"].items}) > 1
    # Length normalisation changes the answer on many items, so acc_norm is tested for itself.
    assert sum(it.pred != it.pred_norm for it in ours["mix_choice"].items) > 5
    assert {u.id for u in ours["mix_choice"].unusable} == {"q7", "q23"}
    assert ours["mix_choice"].n == 40

    import datasets
    import lm_eval
    from lm_eval.models.huggingface import HFLM

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf-datasets"))
    lm = HFLM(pretrained=model, tokenizer=tok, batch_size=8, device="cpu")
    out = lm_eval.simple_evaluate(
        model=lm,
        tasks=["mix", "let"],
        task_manager=lm_eval.tasks.TaskManager(include_path=str(tasks)),
        log_samples=True,
    )
    results = out["results"]
    for name, mine in ours.items():
        theirs = results[name]
        assert theirs["acc,none"] == mine.acc, name
        if name != "let":
            assert theirs["acc_norm,none"] == mine.acc_norm, name
        # Per item: the same log-likelihoods (up to float noise) and the same correctness.
        by_doc = sorted(out["samples"][name], key=lambda s: s["doc_id"])
        for sample, item in zip(by_doc, mine.items):
            assert sample["doc"]["id"] == item.id
            lls = [r[0][0] for r in sample["resps"]]
            assert lls == pytest.approx(list(item.scores), abs=1e-3)
            assert sample["acc"] == float(item.correct)
            if name != "let":
                assert sample["acc_norm"] == float(item.correct_norm)
    # The group averages over all items, as our overall figure does.
    assert results["mix"]["acc,none"] == pytest.approx(both.acc, abs=1e-12)
    assert results["mix"]["acc_norm,none"] == pytest.approx(both.acc_norm, abs=1e-12)
