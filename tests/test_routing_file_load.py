"""Loading a routing file: the side-car fast path gives what parsing the JSON gives."""

from __future__ import annotations

import torch

from moe_roma.routing.store import RoutingStore, load_routing_store, save_routing_store, sidecar_path


def _store(n: int = 30) -> RoutingStore:
    gen = torch.Generator().manual_seed(0)
    routing = torch.softmax(torch.randn(n, 3, 16, generator=gen), -1)
    correct = [i % 3 != 0 for i in range(n)]
    return RoutingStore(
        ids=[f"s{i}" for i in range(n)],
        input_texts=[f"Question: q{i}?\nAnswer:" for i in range(n)],
        layers=[5, 6, 7],
        routing=routing,
        answer_index=[i % 4 for i in range(n)],
        model_answer=[i % 4 if ok else (i + 1) % 4 for i, ok in enumerate(correct)],
        is_correct=correct,
        token_ids=[1] * n,
        token_texts=[":"] * n,
        questions=[f"q{i}?" for i in range(n)],
        choices=[("a", "b", "c", "d")] * n,
        tasks=["t"] * n,
    )


def test_side_car_and_json_parsing_agree(tmp_path):
    path = tmp_path / "routing.json"
    save_routing_store(_store(), path)
    fast = load_routing_store(path)
    sidecar_path(path).unlink()
    slow = load_routing_store(path)
    assert fast.ids == slow.ids and fast.layers == slow.layers == [5, 6, 7]
    assert fast.is_correct == slow.is_correct and fast.model_answer == slow.model_answer
    torch.testing.assert_close(fast.routing, slow.routing, rtol=1e-6, atol=1e-7)


def test_an_edited_json_is_parsed_not_taken_from_its_stale_side_car(tmp_path):
    import json

    path = tmp_path / "routing.json"
    original = _store()
    save_routing_store(original, path)
    assert "format_version" in load_routing_store(path).meta  # the side-car was read
    raw = json.loads(path.read_text())
    raw["s0"]["last_token_routing"]["layers"][0]["routing_weights"] = {"expert_3": 1.0}  # an edit by hand
    path.write_text(json.dumps(raw))
    store = load_routing_store(path)
    assert "format_version" not in store.meta  # its hash no longer matches: the JSON alone decides
    assert store.routing[0, 0].argmax().item() == 3 and store.routing[0, 0, 3].item() == 1.0
    torch.testing.assert_close(store.routing[1:], original.routing[1:], rtol=1e-6, atol=1e-7)


def test_a_side_car_of_another_collection_is_ignored_with_a_warning(tmp_path):
    import shutil

    import pytest

    from moe_roma.io.errors import RomaWarning

    ours, theirs = tmp_path / "ours.json", tmp_path / "theirs.json"
    save_routing_store(_store(), ours)
    other = _store()
    other.routing = torch.softmax(
        torch.randn(other.routing.shape, generator=torch.Generator().manual_seed(1)), -1
    )
    other.meta = {"position": "first"}
    save_routing_store(other, theirs)
    expected = load_routing_store(ours)
    shutil.copy(sidecar_path(theirs), sidecar_path(ours))  # renamed beside our JSON
    with pytest.warns(RomaWarning, match="written for other content than ours.json"):
        store = load_routing_store(ours)
    torch.testing.assert_close(store.routing, expected.routing, rtol=1e-6, atol=1e-7)
    assert "position" not in store.meta and "format_version" not in store.meta


def test_reformatting_the_json_keeps_the_side_car_and_its_metadata(tmp_path):
    import json
    import warnings

    path = tmp_path / "routing.json"
    store = _store()
    store.meta = {"position": "first", "answer_scoring": "continuation"}
    save_routing_store(store, path)
    raw = json.loads(path.read_text())
    path.write_text(json.dumps(raw, indent=4, ensure_ascii=True, sort_keys=True))  # another tool's formatting
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        back = load_routing_store(path)
    assert back.meta["position"] == "first" and back.meta["answer_scoring"] == "continuation"
    assert back.ids == sorted(store.ids)  # the samples in the file's new order, each with its own routing
    torch.testing.assert_close(back.routing, store.routing[[store.ids.index(i) for i in back.ids]])


def test_side_car_tensors_changed_after_writing_are_not_trusted(tmp_path):
    import pytest

    from moe_roma.io.errors import RomaWarning
    from moe_roma.io.tensorfile import load_tensors, save_tensors

    path = tmp_path / "routing.json"
    save_routing_store(_store(), path)
    expected = load_routing_store(path)
    meta, tensors = load_tensors(sidecar_path(path), "side-car")
    tensors["routing"] = tensors["routing"].flip(-1).contiguous()  # still valid routing, other numbers
    save_tensors(sidecar_path(path), tensors, meta)
    with pytest.warns(RomaWarning, match="its tensors were changed"):
        store = load_routing_store(path)
    torch.testing.assert_close(store.routing, expected.routing, rtol=1e-6, atol=1e-7)
