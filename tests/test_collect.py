"""Collection and the routing store: batching, answers, RoMA-code JSON round trip, side-car."""

from __future__ import annotations

import json

import pytest
import torch

from helpers.examples import make_examples
from helpers.tiny_models import build_tiny_model, build_tiny_tokenizer
from moe_roma.data.prompts import letter_prompt
from moe_roma.io.errors import DataError
from moe_roma.models.discovery import discover_routers, routing_weights
from moe_roma.models.inputs import encode_text, letter_token_ids
from moe_roma.routing.collect import collect_routing
from moe_roma.routing.store import load_routing_store, load_routing_tensors, save_routing_store


@pytest.fixture(scope="module")
def model_and_tok():
    return build_tiny_model("olmoe", num_layers=4), build_tiny_tokenizer()


def test_batched_collection_equals_one_at_a_time_and_a_manual_forward(model_and_tok):
    model, tok = model_and_tok
    examples = make_examples(10)
    store, summary = collect_routing(model, tok, examples, layers="last2", batch_size=4, progress=False)
    single, _ = collect_routing(model, tok, examples, layers="last2", batch_size=1, progress=False)
    assert store.layers == [2, 3] and store.routing.shape == (10, 2, 8)
    torch.testing.assert_close(store.routing, single.routing, rtol=1e-4, atol=1e-5)
    assert store.model_answer == single.model_answer
    assert summary.n == 10 and summary.accuracy == store.accuracy
    info = discover_routers(model)
    letters = letter_token_ids(tok, 4)
    for i, ex in enumerate(examples[:4]):
        ids = torch.tensor([encode_text(tok, letter_prompt(ex))])
        with torch.no_grad():
            out = model(ids, output_router_logits=True)
        ref_logits = [r for r in out.router_logits if r is not None]
        for li, layer in enumerate(store.layers):
            ref = routing_weights(ref_logits[info.moe_layers.index(layer)][-1], "softmax")
            torch.testing.assert_close(store.routing[i, li], ref, rtol=1e-4, atol=1e-5)
        expected = int(out.logits[0, -1, letters[: len(ex.choices)]].argmax())
        assert store.model_answer[i] == expected
        assert store.is_correct[i] == (expected == ex.answer)
        assert store.token_ids[i] == ids[0, -1].item()


def test_store_round_trip_and_seed001_layout(tmp_path, model_and_tok):
    model, tok = model_and_tok
    store, _ = collect_routing(model, tok, make_examples(6), layers="last3", batch_size=3, progress=False)
    path = tmp_path / "routing.json"
    save_routing_store(store, path)
    raw = json.loads(path.read_text())
    entry = raw["s1"]
    assert set(entry) >= {"input_text", "last_token_routing", "correct_answer", "model_answer", "is_correct"}
    assert [x["layer"] for x in entry["last_token_routing"]["layers"]] == [1, 2, 3]
    assert set(entry["last_token_routing"]["layers"][0]["routing_weights"]) == {
        f"expert_{i}" for i in range(8)
    }
    back = load_routing_store(path)
    assert back.ids == store.ids and back.layers == store.layers and back.is_correct == store.is_correct
    assert back.choices == store.choices and back.tasks == store.tasks
    torch.testing.assert_close(back.routing, store.routing, rtol=1e-6, atol=1e-7)
    assert back.meta["model"]["architecture"] == "OlmoeForCausalLM"
    side = load_routing_tensors(path)
    assert side is not None and torch.equal(side["routing"], store.routing.float())
    # Editing the JSON makes the side-car stale: it must not be trusted any more.
    path.write_text(path.read_text().replace('"is_correct": true', '"is_correct": false'))
    assert load_routing_tensors(path) is None


def test_reader_accepts_sparse_routing_written_by_others(tmp_path, model_and_tok):
    model, _ = model_and_tok
    path = tmp_path / "theirs.json"
    path.write_text(
        json.dumps(
            {
                "7-870": {
                    "input_text": "Question: what ?\nA) red\nB) blue\nC) cat\nD) dog\nAnswer:",
                    "last_token_routing": {
                        "token_id": 27,
                        "token_text": ":",
                        "layers": [
                            {"layer": 2, "routing_weights": {"expert_0": 0.2, "expert_3": 0.6}},
                            {"layer": 3, "routing_weights": {"expert_1": 1.0, "expert_2": 1.0}},
                        ],
                    },
                    "correct_answer": "C",
                    "model_answer": "C",
                    "is_correct": True,
                }
            }
        )
    )
    store = load_routing_store(path)
    assert store.choices[0] == ("red", "blue", "cat", "dog") and store.answer_index == [2]
    store.fit_to_model(discover_routers(model), path)
    assert store.routing.shape == (1, 2, 8)
    torch.testing.assert_close(store.routing[0, 0, :4], torch.tensor([0.25, 0.0, 0.0, 0.75]))
    torch.testing.assert_close(store.routing[0, 1].sum(), torch.tensor(1.0))


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda e: e.pop("is_correct"), "missing field 'is_correct'"),
        (lambda e: e.update(correct_answer="Q"), "'correct_answer' 'Q' is not among the 4 choices"),
        (
            lambda e: e["last_token_routing"]["layers"][0]["routing_weights"].update(expert_0=float("nan")),
            "must be a finite number",
        ),
        (
            lambda e: e["last_token_routing"]["layers"][0]["routing_weights"].update(bad=1.0),
            "is not 'expert_<i>'",
        ),
        (lambda e: e["last_token_routing"].update(layers=[]), "must be a non-empty list"),
    ],
)
def test_reader_names_file_record_and_problem(tmp_path, mutate, message):
    entry = {
        "input_text": "Question: what ?\nA) red\nB) blue\nC) cat\nD) dog\nAnswer:",
        "last_token_routing": {"layers": [{"layer": 2, "routing_weights": {"expert_0": 1.0}}]},
        "correct_answer": "C",
        "is_correct": True,
    }
    mutate(entry)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"q9": entry}).replace("NaN", "NaN"))
    with pytest.raises(DataError) as err:
        load_routing_store(path)
    text = str(err.value)
    assert str(path) in text and "id q9" in text and message in text


def test_routing_from_another_model_is_refused(tmp_path, model_and_tok):
    model, tok = model_and_tok
    store, _ = collect_routing(model, tok, make_examples(3), layers="last2", batch_size=3, progress=False)
    other = discover_routers(build_tiny_model("qwen2_moe", num_layers=2))  # MoE layer 1 only, 8 experts
    with pytest.raises(DataError, match="not MoE layers"):
        store.fit_to_model(other, "routing.json")
