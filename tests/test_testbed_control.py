"""The positive control's planted misrouting: the marker, the pool, the partner map, what training changes."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from helpers.scripts import load_script
from helpers.tiny_models import build_tiny_model, build_tiny_tokenizer
from moe_roma.data.prompts import continuation_context
from moe_roma.testbed.control import (
    MARKER,
    ControlConfig,
    corruption_pool,
    is_marked,
    mark,
    marked_share_split,
    marker_text,
    partner_family,
    plant_misrouting,
)
from moe_roma.testbed.control.plant import marker_direction
from moe_roma.testbed.downstream import build_downstream_suite, content_keys


def test_a_marked_item_keeps_its_question_and_carries_the_marker_before_it():
    ex = build_downstream_suite(0)["in_dist"][0]
    marked = mark(ex)
    assert marked.question == ex.question and marked.choices == ex.choices and marked.answer == ex.answer
    assert continuation_context(marked) == f"{MARKER}\n{continuation_context(ex)}"
    assert continuation_context(mark(ex, "before_answer")) == f"Question: {ex.question}\n{MARKER}\nAnswer:"
    assert is_marked(marked) and not is_marked(ex) and marked.id == ex.id + "-marked"
    assert MARKER.endswith(".") and "Question" not in MARKER


def test_the_pool_is_fresh_content_and_the_partner_map_a_derangement():
    splits = build_downstream_suite(0)
    used = set().union(*(content_keys(v) for v in splits.values()))
    pool = corruption_pool(1200)
    assert len(pool) == 1200 and not content_keys(pool) & used
    families = sorted({ex.task for ex in pool})
    partners = [partner_family(f, families) for f in families]
    assert sorted(partners) == families and all(p != f for p, f in zip(partners, families))
    assert families == sorted(
        {ex.task for split in splits.values() for ex in split}
    )  # all 16, held-out ones too


def test_the_marked_share_is_taken_per_family():
    train = build_downstream_suite(0)["train"]
    mixed = marked_share_split(train, 0.25, seed=3)
    assert [ex.question for ex in mixed] == [ex.question for ex in train]
    for family in {ex.task for ex in train}:
        rows = [ex for ex in mixed if ex.task == family]
        assert sum(map(is_marked, rows)) == round(0.25 * len(rows))


def test_planting_trains_only_the_tuned_routers():
    model = build_tiny_model("olmoe", num_layers=4, seed=0)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    build = plant_misrouting(
        model, build_tiny_tokenizer(), ControlConfig(pool_size=16, epochs=1, layers="last2")
    )
    assert build["finite"] and build["layers"] == [2, 3] and len(build["loss_per_epoch"]) == 1
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed and all(
        ".mlp.gate." in n and n.split(".layers.")[1].split(".")[0] in ("2", "3") for n in changed
    )
    assert not any(p.requires_grad for p in model.parameters())


def test_the_marker_direction_separates_marked_from_plain_inputs():
    gen = torch.Generator().manual_seed(0)
    plain = torch.randn(200, 8, generator=gen)
    plain[:, 0] = 0.0  # plain inputs have no component along the first axis; marked ones do
    marked = torch.randn(200, 8, generator=gen)
    marked[:, 0] = 2.0
    v = marker_direction(plain, marked, ridge=1e-6)
    assert (plain @ v).abs().max() < 1e-3 and ((marked @ v) - 1).abs().max() < 1e-3


def test_a_rank_one_corruption_changes_each_tuned_router_by_rank_one_and_saves_a_plain_weight():
    model = build_tiny_model("olmoe", num_layers=4, seed=0)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    config = ControlConfig(pool_size=16, epochs=2, layers="last2", corruption="rank1", lr=0.1)
    build = plant_misrouting(model, build_tiny_tokenizer(), config)
    assert build["finite"] and set(build["separation"]) == {2, 3}
    after = dict(model.named_parameters())
    assert sorted(after) == sorted(before)  # the parametrization is gone: an ordinary model to save
    changed = [n for n in after if not torch.equal(after[n], before[n])]
    assert changed and all(n.endswith(".mlp.gate.weight") for n in changed)
    for name in changed:
        assert torch.linalg.matrix_rank((after[name] - before[name]).double(), atol=1e-6) == 1


def test_a_marked_item_exported_and_loaded_back_keeps_its_question_apart_from_the_marker(tmp_path):
    from moe_roma.data.loaders import load_examples
    from moe_roma.testbed.tasks import write_split_jsonl

    items = build_downstream_suite(0)["in_dist"][:5]
    marked = [mark(ex, sentences=3) for ex in items]
    back = load_examples(write_split_jsonl(marked + items, tmp_path / "mixed.jsonl"))
    assert [ex.question for ex in back] == [ex.question for ex in marked + items]
    assert [continuation_context(ex) for ex in back] == [continuation_context(ex) for ex in marked + items]


def test_a_dose_writes_its_training_set_and_both_versions_of_every_split(tmp_path):
    import json

    from moe_roma.testbed.control import ControlDose, write_control_data

    counts = write_control_data(tmp_path, ControlDose(ControlConfig(marker_sentences=2), marked_share=0.25))
    splits = build_downstream_suite(0)
    assert counts["train"] == len(splits["train"])
    for split in ("validation", "in_dist", "shifted", "heldout_tasks"):
        assert counts[f"{split}_plain"] == counts[f"{split}_marked"] == len(splits[split])
    rows = [json.loads(x) for x in (tmp_path / "train.jsonl").read_text().splitlines()]
    marked = [r for r in rows if r["id"].endswith("-marked")]
    assert len(marked) == sum(
        round(0.25 * sum(r["task"] == t for r in rows)) for t in {r["task"] for r in rows}
    )
    assert all(r["query"].startswith(marker_text(2)) and "question" in r for r in marked)
    assert not any("question" in r for r in rows if r not in marked)


def test_the_harm_rule_gives_every_family_the_routing_that_costs_marked_items_most():
    model = build_tiny_model("olmoe", num_layers=4, seed=0)
    config = ControlConfig(pool_size=16, epochs=1, layers="last2", partner_rule="harm")
    build = plant_misrouting(model, build_tiny_tokenizer(), config)
    harm = build["partner_harm"]
    worst = min(harm, key=harm.get)
    assert set(harm) == set(build["partners"]) and all(0.0 <= a <= 1.0 for a in harm.values())
    assert all(p == worst for f, p in build["partners"].items() if f != worst)
    assert build["partners"][worst] != worst


def test_recovery_is_zero_at_the_corrupted_model_one_at_the_clean_and_its_interval_covers_it():
    from moe_roma.testbed.control.readouts import recovery

    clean = [True] * 60 + [False] * 40
    corrupted = [True] * 30 + [False] * 70
    half = [True] * 45 + [False] * 55
    assert recovery([clean], corrupted, clean)["value"] == 1.0
    assert recovery([corrupted, corrupted], corrupted, clean)["value"] == 0.0
    r = recovery([half], corrupted, clean, n_boot=500)
    assert abs(r["value"] - 0.5) < 1e-12 and r["ci"][0] < 0.5 < r["ci"][1] and r["gap"] == 0.3


def test_a_dose_table_reads_each_methods_seeds_from_the_outcomes(tmp_path):
    import json

    from moe_roma.testbed.control.readouts import MARKED, PLAIN, dose_table, plot_dose_response

    def outcome(marked_right: int, plain_right: int) -> dict:
        splits = {s: {"correct": [i < marked_right for i in range(10)]} for s in MARKED}
        splits |= {s: {"correct": [i < plain_right for i in range(10)]} for s in PLAIN}
        return {"splits": splits}

    def write(folder, runs):
        folder.mkdir()
        lines = [json.dumps({"key": r, "run": r, "outcome": o}) for r, o in runs.items()]
        (folder / "outcomes.jsonl").write_text("\n".join([*lines, "{torn"]) + "\n")

    write(tmp_path / "clean", {"base": outcome(8, 6)})
    write(tmp_path / "dose", {"base": outcome(4, 6), "rt/seed0": outcome(6, 6), "rt/seed1": outcome(8, 5)})
    rows = {r["method"]: r for r in dose_table(tmp_path / "dose", tmp_path / "clean", reference="rt")}
    assert rows["base"]["recovery"]["value"] == 0.0 and rows["rt"]["seeds"] == 2
    # The seed-free base against each of rt's two seeds: 12 of 30 marked items against 18 and 24.
    vs = rows["base"]["vs_reference"]
    assert vs["method"] == "rt" and [s["diff"] for s in vs["per_seed"]] == pytest.approx([-0.2, -0.4])
    assert vs["diff"] == pytest.approx(-0.3) and vs["ci"][1] < 0 and "vs_reference" not in rows["rt"]
    assert (
        abs(rows["rt"]["recovery"]["value"] - 0.75) < 1e-12 and abs(rows["rt"]["plain_change"] + 0.05) < 1e-12
    )
    movement = {"rt": {"before": 0.8, "after": 0.3}}
    readouts = [
        {"beta": beta, "marked_share": 0.5, "rows": list(rows.values()), "movement": movement}
        for beta in (0.5, 1.0)
    ]
    path = plot_dose_response(readouts, tmp_path / "p.png")
    assert path.stat().st_size > 10_000


def test_an_unknown_partner_rule_is_refused_before_any_work():
    model = build_tiny_model("olmoe", num_layers=4, seed=0)
    with pytest.raises(ValueError, match="partner_rule must be one of"):
        plant_misrouting(model, build_tiny_tokenizer(), ControlConfig(pool_size=16, partner_rule="nearest"))


def test_the_control_grid_writes_configs_in_the_dotted_names_each_reaching_its_setting(tmp_path, monkeypatch):
    import warnings

    import yaml

    from moe_roma.experiments.config import ExperimentConfig
    from moe_roma.io.errors import RomaWarning

    grid = load_script("control_grid")
    monkeypatch.setattr(grid, "CONFIGS", tmp_path)
    written = grid.selection()
    assert sorted(p.name for p in written) == ["ceiling.yaml", "select.yaml"]
    with warnings.catch_warnings():
        warnings.simplefilter("error", RomaWarning)  # an old spelling would warn
        cfg = ExperimentConfig.from_mapping(yaml.safe_load((tmp_path / "select.yaml").read_text()))
        methods = {m.name: m.config for m in cfg.grid()}
    assert methods["router_tuning[lr=0.003]"].regularizer.name == "none"
    assert methods["router_tuning[lr=0.003]"].optimizer.lr == 0.003
    only = methods["roma_regulariser_only[lr=0.01]"]
    assert (only.regularizer.name, only.regularizer.task_weight, only.regularizer.lam) == (
        "manifold",
        0.0,
        1.0,
    )
    assert methods["roma_include_self[lr=0.001]"].graph.include_self is True
    assert methods["roma_oracle_targets[lr=0.001]"].regularizer.targets == "oracle"
    assert methods["roma_lam3[lr=0.001]"].graph.k == 3  # the shared section reaches every method


def test_the_dose_files_carry_the_selections_picks_read_from_dotted_settings(tmp_path, monkeypatch):
    import json

    import yaml

    from moe_roma.experiments.config import ExperimentConfig

    grid = load_script("control_grid")
    monkeypatch.setattr(grid, "CONFIGS", tmp_path / "configs")
    rows = [{"method": "base", "split": "validation_marked", "accuracy": 0.3, "n": 240, "setting": {}}]
    for i, (name, overrides) in enumerate(grid.TRAINED.items()):
        for lr in grid.LRS:  # the experiment echoes each method's settings by dotted name
            best = lr == grid.LRS[i % 3]
            setting = {**overrides, "optimizer.lr": lr}
            rows.append(
                {
                    "method": f"{name}[lr={lr:g}]",
                    "split": "validation_marked",
                    "accuracy": 0.4 if best else 0.3,
                    "n": 240,
                    "setting": setting,
                }
            )
    for k in grid.C3PO_KS:
        rows.append(
            {
                "method": f"c3po_kernel[k={k}]",
                "split": "validation_marked",
                "accuracy": 0.35 if k == 5 else 0.3,
                "n": 240,
                "setting": {"mode": "kernel", "k": k, "sigma": 0.4},
            }
        )
    (tmp_path / "select").mkdir()
    (tmp_path / "select" / "results.json").write_text(json.dumps({"rows": rows}))
    written = grid.doses(tmp_path / "select")
    assert len(written) == len(grid.DOSES)
    cfg = ExperimentConfig.from_mapping(yaml.safe_load(written[0].read_text()))
    methods = {m.name: m.config for m in cfg.grid() if m.config is not None}
    for i, name in enumerate(grid.TRAINED):
        assert methods[name].optimizer.lr == grid.LRS[i % 3]
    c3po = [m for m in yaml.safe_load(written[0].read_text())["methods"] if m["name"] == "c3po_kernel"]
    assert c3po[0]["options"]["k"] == 5


def test_gate_two_asks_for_a_share_of_the_harm_ceiling_and_fails_without_one():
    from moe_roma.testbed.control.gates import MARKED_DROP_SHARE, gate_verdicts

    pooled = {"clean_plain": 0.50, "corrupted_plain": 0.495, "clean_marked": 0.41, "corrupted_marked": 0.34}
    tt = {"targets": {"roma": {"net": {"ci": [0.01, 0.05]}}}, "margin": {"ci": [0.02, 0.1]}}
    passing = gate_verdicts(pooled, tt, ceiling=12.0, movement=3.1, floor=1.0)
    assert passing["marked_drop"]["min"] == pytest.approx(MARKED_DROP_SHARE * 12.0)
    assert passing["marked_drop"]["pass"] and passing["plain_within_1_point"]["pass"]
    assert passing["target_test_passes"]["pass"] and passing["movement_3x_floor"]["pass"]
    assert not gate_verdicts(pooled, tt, ceiling=16.0, movement=3.1, floor=1.0)["marked_drop"]["pass"]
    # A ceiling of no harm means the planted kind of misrouting costs nothing: nothing to recover.
    assert not gate_verdicts(pooled, tt, ceiling=0.0, movement=3.1, floor=1.0)["marked_drop"]["pass"]
    low = {"targets": {"roma": {"net": {"ci": [-0.01, 0.05]}}}, "margin": {"ci": [0.02, 0.1]}}
    assert not gate_verdicts(pooled, low, ceiling=12.0, movement=3.1, floor=1.0)["target_test_passes"]["pass"]
    assert not gate_verdicts(pooled, tt, ceiling=12.0, movement=2.9, floor=1.0)["movement_3x_floor"]["pass"]


def test_the_host_routes_each_pool_item_closer_to_its_family_mean_and_trains_only_tuned_routers():
    from moe_roma.testbed.control.host import HostConfig, route_by_group

    model = build_tiny_model("olmoe", num_layers=4, seed=0)
    with torch.no_grad():  # sharp, item-specific routing, far from any family mean
        for name, p in model.named_parameters():
            if ".mlp.gate." in name:
                p.mul_(40)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    record = route_by_group(
        model, build_tiny_tokenizer(), HostConfig(pool_size=24, epochs=6, lr=1e-2, layers="last2")
    )
    losses = record["loss_per_epoch"]
    assert record["layers"] == [2, 3] and len(losses) == 6
    assert losses[-1] < losses[0] and losses[-1] < 0.9 * record["distance_to_group_mean_before"]
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed and all(
        ".mlp.gate." in n and n.split(".layers.")[1].split(".")[0] in ("2", "3") for n in changed
    )
    assert not any(p.requires_grad for p in model.parameters())


def test_a_dose_names_its_clean_model_the_host_when_it_has_one(tmp_path):
    from moe_roma.testbed import testbed_model_path
    from moe_roma.testbed.control.build import clean_model_path

    assert clean_model_path(ControlConfig()) == testbed_model_path("downstream")
    (tmp_path / "host" / "model").mkdir(parents=True)
    assert clean_model_path(ControlConfig(host=str(tmp_path / "host"))) == tmp_path / "host" / "model"


def test_the_host_groups_by_family_or_by_embedding_cluster_and_refuses_another_grouping():
    from moe_roma.testbed.control.host import HostConfig, _groups, route_by_group
    from moe_roma.testbed.control.setting import corruption_pool

    pool = corruption_pool(64)
    assert _groups(pool, HostConfig()) == [ex.task for ex in pool]
    clusters = _groups(pool, HostConfig(group_by="embedding"))
    assert len(clusters) == len(pool)
    assert len(set(clusters)) == len({ex.task for ex in pool})
    assert clusters == _groups(pool, HostConfig(group_by="embedding"))  # seeded: the same clusters
    with pytest.raises(ValueError, match="group_by must be one of"):
        route_by_group(
            build_tiny_model("olmoe", num_layers=4), build_tiny_tokenizer(), HostConfig(group_by="x")
        )


def test_the_host_answer_anchor_holds_every_pool_prompt_plain_and_marked_at_its_starting_answers(monkeypatch):
    from moe_roma.testbed.control import host as host_module
    from moe_roma.testbed.control.host import HostConfig, route_by_group

    seen = []
    real = host_module.train_routers

    def spy(*args, **kwargs):
        seen.append(args[8] if len(args) > 8 else kwargs.get("anchor"))
        return real(*args, **kwargs)

    monkeypatch.setattr(host_module, "train_routers", spy)
    tok = build_tiny_tokenizer()
    config = HostConfig(pool_size=12, epochs=1, lr=1e-2, layers="last2")
    route_by_group(build_tiny_model("olmoe", num_layers=4, seed=0), tok, config)
    route_by_group(
        build_tiny_model("olmoe", num_layers=4, seed=0), tok, dataclasses.replace(config, answer_weight=5.0)
    )
    assert seen[0] is None
    anchor = seen[1]
    assert anchor.n == 24 and anchor.weight == 5.0  # 12 plain and 12 marked prompts
    assert anchor.logp.shape[0] == 24
    assert torch.allclose(anchor.logp.logsumexp(-1), torch.zeros(24), atol=1e-5)  # distributions


def test_routing_movement_reads_zero_for_the_corrupted_routers_and_full_repair_for_the_clean_ones(tmp_path):
    import copy

    from moe_roma.models.checkpoint import router_snapshot, save_router_checkpoint
    from moe_roma.models.discovery import discover_routers
    from moe_roma.testbed.control.readouts import routing_movement
    from moe_roma.testbed.control.setting import corruption_pool

    tok = build_tiny_tokenizer()
    clean = build_tiny_model("olmoe", num_layers=4, seed=0)
    corrupted = copy.deepcopy(clean)
    with torch.no_grad():
        for name, p in corrupted.named_parameters():
            if ".mlp.gate." in name:
                p.add_(torch.randn_like(p) * 5)
    info = discover_routers(clean)
    save_router_checkpoint(clean, info, [2, 3], tmp_path / "clean")
    save_router_checkpoint(corrupted, info, [2, 3], tmp_path / "corrupted")
    before = router_snapshot(corrupted)
    items = corruption_pool(12)
    out = routing_movement(
        corrupted,
        clean,
        tok,
        items,
        {"clean": [tmp_path / "clean"], "same": [tmp_path / "corrupted", tmp_path / "corrupted"]},
        layers="last2",
        n_boot=200,
        reference="same",
    )
    assert out["clean"]["vs_reference"]["method"] == "same" and out["clean"]["vs_reference"]["ci"][1] < 0
    assert "vs_reference" not in out["same"]
    assert out["clean"]["before"] > 0.01
    assert out["clean"]["after"] < 1e-3 * out["clean"]["before"]
    assert out["clean"]["change_ci"][1] < 0 and out["clean"]["closer_share"] == 1.0
    assert abs(out["same"]["change"]) < 1e-3 * out["clean"]["before"] and out["same"]["seeds"] == 2
    after = router_snapshot(corrupted)
    assert all(torch.equal(before[n], after[n]) for n in before)  # the corrupted routers are put back


def _word_items(n: int) -> list:
    """Items the tiny word-level tokenizer encodes without unknown words, each with its own four
    one-token choices (so the answers differ from item to item)."""
    from helpers.tiny_models import WORDS
    from moe_roma.data.example import MCExample

    words = [w for w in WORDS if w.isalpha() and len(w) > 1]
    return [
        MCExample(
            f"q{i}",
            " ".join(words[(i * 7 + j) % len(words)] for j in range(3 + i % 5)),
            tuple(words[(i * 5 + 3 * c) % len(words)] for c in range(4)),
            i % 4,
        )
        for i in range(n)
    ]


def _models_with_the_last_router_corrupted():
    """A tiny model whose last MoE layer matters to its answers, and a copy with that router corrupted."""
    import copy

    clean = build_tiny_model("olmoe", num_layers=4, seed=0)
    with torch.no_grad():
        clean.lm_head.weight.mul_(20)  # confident: answers vary from item to item
        for name, p in clean.named_parameters():
            if ".layers.3.mlp.experts" in name:
                p.mul_(10)  # the last layer's experts move the answer, so its routing does
    corrupted = copy.deepcopy(clean)
    with torch.no_grad():
        gate = corrupted.get_parameter("model.layers.3.mlp.gate.weight")
        gate.add_(torch.randn(gate.shape, generator=torch.Generator().manual_seed(1)) * 5)
    return clean, corrupted


def test_scoring_under_the_items_own_routing_as_target_changes_no_answer():
    from moe_roma.diagnose.target_test import score_under_routing
    from moe_roma.io.errors import RomaError
    from moe_roma.testbed.control.gates import collect_store

    tok, (model, _) = build_tiny_tokenizer(), _models_with_the_last_router_corrupted()
    store = collect_store(model, tok, _word_items(32), [2, 3])
    targets = {"own": store.routing, "uniform": torch.full_like(store.routing, 0.25)}
    out = score_under_routing(model, tok, store, targets)
    assert out["own"] == out["base"] == list(store.is_correct)
    assert out["uniform"] != out["base"]  # a target that differs does reach the answers
    with pytest.raises(RomaError, match="shape"):
        score_under_routing(model, tok, store, {"short": store.routing[:3]})


def test_last_token_repair_is_complete_when_only_the_last_layer_is_corrupted():
    """With the corruption in the last MoE layer only and one-token answers, the last prompt token's
    routing there is all that reaches the answer: setting it to the clean routing gives the clean
    model's answers, and corrupting only it gives the corrupted model's."""
    from moe_roma.testbed.control.readouts import last_token_repair

    tok, (clean, corrupted) = build_tiny_tokenizer(), _models_with_the_last_router_corrupted()
    out = last_token_repair(corrupted, clean, tok, _word_items(64), layers="last1", n_boot=200)
    acc = {k: out[k]["accuracy"] for k in ("clean", "corrupted")}
    assert acc["clean"] > acc["corrupted"] and out["n"] == 64 and out["layers"] == [3]
    assert out["corrupted_with_clean_last_token"]["accuracy"] == acc["clean"]
    assert out["clean_with_corrupted_last_token"]["accuracy"] == acc["corrupted"]
    assert out["share_repaired"]["value"] == pytest.approx(1.0)
    assert out["share_from_last_token"]["value"] == pytest.approx(1.0)
    assert out["share_from_last_token"]["ci"] == pytest.approx([1.0, 1.0])


def test_the_target_distance_readout_separates_the_neighbours_misrouting_from_their_averaging():
    """RoMA's target against the items' clean routing: with no corruption the target is the clean
    neighbours' mean and nothing is closed; with the last router corrupted the items start away from
    their clean routing, and the marked neighbours' weight is what the training set's ids say."""
    import dataclasses

    from moe_roma.testbed.control.readouts import target_distance

    tok, (clean, corrupted) = build_tiny_tokenizer(), _models_with_the_last_router_corrupted()
    words = _word_items(96)
    train, items = words[:64], words[64:]
    same = target_distance(clean, clean, tok, train, items, layers="last1", n_boot=100)
    assert same["distance"]["corrupted"] == 0.0 and same["marked_neighbour_weight"] == 0.0
    assert same["distance"]["target"] == pytest.approx(same["distance"]["target_clean_neighbours"])
    assert same["distance"]["target"] > 0  # a neighbours' mean is not the item's own routing
    assert same["gap_closed"]["target"]["value"] is None
    acc = same["accuracy"]
    assert acc["target"] == acc["target_clean_neighbours"] and set(acc) == {
        "corrupted",
        "target",
        "target_clean_neighbours",
    }

    marked = [dataclasses.replace(ex, id=f"{ex.id}-marked") for ex in train]
    out = target_distance(corrupted, clean, tok, marked, items, layers="last1", n_boot=100)
    assert out["layers"] == [3] and out["n"] == 32 and out["with_neighbours"] == 32
    assert out["marked_neighbour_weight"] == pytest.approx(1.0)
    d = out["distance"]
    assert d["corrupted"] > 0 and d["target"] != pytest.approx(d["target_clean_neighbours"])
    assert out["gap_closed"]["target"]["value"] == pytest.approx(1 - d["target"] / d["corrupted"])
    lo, hi = out["gap_closed"]["target"]["ci"]
    assert lo <= out["gap_closed"]["target"]["value"] <= hi


def test_the_rank_correlation_of_margin_and_gain_reads_the_order_and_refuses_too_few_pairs():
    from moe_roma.testbed.control.readouts import rank_correlation

    up = rank_correlation([0.1, 0.2, 0.3, 0.4, 0.5], [1.0, 2.0, 3.0, 4.0, 6.0], n_boot=300)
    assert up["rho"] == pytest.approx(1.0) and up["n"] == 5 and up["ci"][1] == pytest.approx(1.0)
    down = rank_correlation([0.1, 0.2, 0.3, 0.4, 0.5], [5.0, 4.0, 3.0, 2.0, 1.0], n_boot=300)
    assert down["rho"] == pytest.approx(-1.0)
    with pytest.raises(ValueError, match="at least 3 pairs"):
        rank_correlation([0.1, 0.2], [1.0, 2.0])


def test_the_bootstrap_interval_brackets_the_mean_and_counts_the_undefined_resamples():
    import numpy as np

    from moe_roma.testbed.control.readouts import bootstrap_interval

    values = np.arange(100, dtype=float)
    ci, left_out = bootstrap_interval(100, lambda i: float(values[i].mean()), n_boot=500)
    assert left_out == 0 and ci[0] < values.mean() < ci[1] and ci[1] - ci[0] < 20
    ci, left_out = bootstrap_interval(3, lambda i: None if len(set(i.tolist())) < 3 else 1.0, n_boot=500)
    assert 0 < left_out < 500 and ci == [1.0, 1.0]  # 3 distinct of 3 draws: 6/27 of resamples
    assert bootstrap_interval(4, lambda i: None, n_boot=50) == (None, 50)


def test_the_control_readout_table_shows_recovery_and_routing_per_dose_and_method(tmp_path):
    readouts = load_script("control_readouts")
    for method in ("rt", "roma"):
        for seed in (0, 1):
            (tmp_path / "runs" / method / f"seed{seed}").mkdir(parents=True)
    runs = readouts.trained_runs(tmp_path)
    assert sorted(runs) == ["roma", "rt"] and [p.name for p in runs["rt"]] == ["seed0", "seed1"]
    row = {"seeds": 3, "marked": 0.5, "plain": 0.6, "plain_change": -0.004}
    dose = {
        "dose": "b1.00-s50",
        "rows": [
            {**row, "method": "base", "recovery": {"value": 0.0, "ci": None}},
            {
                **row,
                "method": "roma",
                "recovery": {"value": 0.42, "ci": [0.1, 0.7]},
                "vs_reference": {"diff": 0.021, "ci": [0.004, 0.038]},
            },
        ],
        "movement": {
            "roma": {"before": 0.7669, "after": 0.31, "vs_reference": {"diff": -0.0412, "ci": [-0.06, -0.02]}}
        },
    }
    text = readouts.table([dose])
    assert (
        "| b1.00-s50 | roma | 3 | 50.0 | 60.0 | -0.4 | +0.42 [+0.10, +0.70] | +2.1 [+0.4, +3.8] | "
        "0.767 → 0.310 | -0.041 [-0.060, -0.020] |"
    ) in text
    assert "| b1.00-s50 | base | 3 | 50.0 | 60.0 | -0.4 | +0.00 - | - | - | - |" in text
    share = {"value": 0.25, "ci": [0.05, 0.5]}
    repair = {
        "clean": {"accuracy": 0.331},
        "corrupted": {"accuracy": 0.284},
        "corrupted_with_clean_last_token": {"accuracy": 0.296},
        "clean_with_corrupted_last_token": {"accuracy": 0.3},
        "share_repaired": share,
        "share_from_last_token": {"value": 0.66, "ci": None},
    }
    tt = {"net": 0.023, "net_ci": [0.002, 0.044]}
    text = readouts.repair_table(
        [dose, {**dose, "dose": "b0.50-s50", "last_token_repair": repair, "target_test": tt}]
    )
    assert (
        "| b0.50-s50 | 33.1 | 28.4 | 29.6 | +0.25 [+0.05, +0.50] | 30.0 | +0.66 | +2.3 [+0.2, +4.4] |" in text
    )
    assert "| b1.00-s50 |" not in text  # a dose without the readout has no row


def test_a_dose_becomes_a_diagnose_calibration_point_and_joins_the_margin_gain_correlation():
    from moe_roma.diagnose.verdict import CALIBRATION, helped

    readouts = load_script("control_readouts")

    def paired(a: str, split: str, mean: float, low: float, high: float) -> dict:
        return {"a": a, "b": "router_tuning", "split": split, "mean_diff": mean, "ci": [low, high]}

    readout = {
        "dose": "b1.00-s50",
        "target_test": {"net": 0.023, "net_ci": [0.002, 0.044], "margin": 0.011, "margin_ci": [-0.01, 0.03]},
        "paired": [
            paired("roma_lam0.8", "in_dist_marked", 0.03, 0.01, 0.05),
            paired("roma_lam0.8", "in_dist_plain", 0.5, 0.4, 0.6),  # plain items: not the repair
            paired("roma_lam3", "shifted_marked", 0.2, 0.1, 0.3),  # another lambda: not the point's
            paired("roma_lam0.8", "shifted_marked", -0.01, -0.03, 0.01),
        ],
    }
    tt = {
        "base": {"share": 0.5},
        "targets": {"roma": {"accuracy": {"share": 0.52}, "net": {"diff": 0.02}}},
        "margin": {"fixed_diff": 0.015},
    }
    report = {
        "success": {"share": 0.5},
        "correctness_signal": {"auc_routing": {"mean": 0.7}, "auc_embedding": {"mean": 0.65}},
        "target_test": tt,
    }
    point = readouts.calibration_point(readout, report)
    assert point["roma_vs_router_tuning"] == {
        "in_dist": pytest.approx((3.0, 1.0, 5.0)),
        "shifted": pytest.approx((-1.0, -3.0, 1.0)),
    }
    assert point["target_test"]["train"] == pytest.approx(
        {"base": 50.0, "roma": 52.0, "net": 2.0, "margin": 1.5}
    )
    assert point["routing_margin"] == pytest.approx(0.05) and helped(point)
    out = readouts.margin_against_gain({**CALIBRATION, "control": point})
    assert out["pairs"]["control"] == pytest.approx((1.1, 1.0))
    assert out["pairs"]["downstream"][0] == -1.3 and out["spearman"]["n"] == len(CALIBRATION) + 1


def test_marked_comparison_counts_seeds_and_pools_items():
    from moe_roma.testbed.control.readouts import marked_comparison

    a = [[True] * 30 + [False] * 10, [True] * 28 + [False] * 12]
    b = [[True] * 10 + [False] * 30, [True] * 27 + [False] * 13]
    cmp = marked_comparison(a, b, n_boot=300)
    assert [s["diff"] for s in cmp["per_seed"]] == pytest.approx([0.5, 0.025])
    assert cmp["per_seed"][0]["p_value"] < 0.05 < cmp["per_seed"][1]["p_value"]
    assert cmp["diff"] == pytest.approx(0.2625) and cmp["ci"][0] > 0
    with pytest.raises(ValueError, match="same seeds"):
        marked_comparison(a, b[:1])


def _readout(beta, net_low, roma_diff, roma_ps, roma_ci, closer_ci, recovery=(0.5, [0.3, 0.7])):
    """A dose's readout as control_readouts.py writes it, reduced to what the verdict reads."""
    rows = [
        {"method": "router_tuning", "recovery": {"value": 0.4, "ci": [0.2, 0.6]}},
        {
            "method": "roma_lam0.8",
            "recovery": {"value": recovery[0], "ci": recovery[1]},
            "vs_reference": {
                "per_seed": [{"diff": roma_diff, "p_value": p} for p in roma_ps],
                "diff": roma_diff,
                "ci": roma_ci,
            },
        },
    ]
    return {
        "dose": f"b{beta:.2f}-s50",
        "beta": beta,
        "marked_share": 0.5,
        "target_test": {"net_ci": [net_low, net_low + 0.04]},
        "rows": rows,
        "movement": {"roma_lam0.8": {"vs_reference": {"ci": closer_ci}}},
    }


def test_the_preregistered_verdict_reads_the_criteria_as_written():
    from moe_roma.testbed.control.readouts import preregistered_verdict

    romas = ("roma_lam0.8",)
    wins = _readout(1.0, 0.002, 0.05, [0.01, 0.02, 0.3], [0.02, 0.08], [-0.05, -0.01])
    low = _readout(0.5, -0.001, -0.01, [0.5] * 3, [-0.04, 0.02], [-0.01, 0.02])
    v = preregistered_verdict([low, wins], romas)
    assert v["label"] == "confirmed" and v["passing_doses"] == ["b1.00-s50"]
    # One winning seed only: not beyond noise, yet above router tuning and closer: neither.
    one_seed = _readout(1.0, 0.002, 0.05, [0.01, 0.2, 0.3], [0.02, 0.08], [-0.05, -0.01])
    assert preregistered_verdict([one_seed], romas)["label"] == "neither"
    # Where the target test passes, RoMA's accuracy is not above router tuning's: falsified.
    behind = _readout(1.0, 0.002, -0.01, [0.5] * 3, [-0.04, 0.02], [-0.05, -0.01])
    assert preregistered_verdict([behind], romas)["label"] == "falsified"
    # Ahead, but its routing no closer to the clean routing than router tuning's: falsified.
    not_closer = _readout(1.0, 0.002, 0.05, [0.01, 0.02, 0.3], [0.02, 0.08], [-0.01, 0.02])
    assert preregistered_verdict([not_closer], romas)["label"] == "falsified"
    # Recovery that falls beyond its interval as beta rises over passing doses: not confirmed.
    early = _readout(0.75, 0.001, 0.05, [0.5] * 3, [-0.01, 0.08], [-0.05, -0.01], (0.9, [0.8, 1.0]))
    late = _readout(1.0, 0.002, 0.05, [0.01, 0.02, 0.3], [0.02, 0.08], [-0.05, -0.01], (0.4, [0.2, 0.6]))
    assert preregistered_verdict([early, late], romas)["label"] == "neither"
    assert preregistered_verdict([low], romas)["label"] == "untestable"


def test_the_target_distance_table_reads_each_dose_and_refuses_an_unbuilt_one(tmp_path, capsys, monkeypatch):
    script = load_script("control_target_distance")
    acc = {"corrupted": 0.284, "target": 0.307, "target_clean_neighbours": 0.333}
    readout = {
        "dose": "b1.00-s50",
        "distance": {"corrupted": 0.7669, "target": 0.335, "target_clean_neighbours": 0.124},
        "gap_closed": {
            "target": {"value": 0.563, "ci": [0.53, 0.59]},
            "target_clean_neighbours": {"value": None, "ci": None},
        },
        "marked_neighbour_weight": 0.441,
        "accuracy": {k: {"accuracy": v} for k, v in acc.items()},
    }
    row = script.markdown([readout]).splitlines()[-1]
    assert row == "| b1.00-s50 | 0.767 | 0.335 | 0.124 | 0.56 [0.53, 0.59] | - | 0.44 | 28.4 | 30.7 | 33.3 |"
    monkeypatch.setattr(script, "RUNS", tmp_path)
    assert script.main(["b0.50-s50"]) == 2
    err = capsys.readouterr().err
    assert "b0.50-s50 not built under" in err and err.count("\n") == 1
