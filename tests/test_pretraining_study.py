"""Seed 000's architectures, alignment during pre-training, seed 002's router stability, and the grid."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest
import torch

from moe_roma.testbed import alignment as al
from moe_roma.testbed import testbed_model_path
from moe_roma.testbed.build import (
    build_tokenizer,
    encode_documents,
    make_model,
    pretrain,
    seed_everything,
    task_indices,
)
from moe_roma.testbed.config import (
    ARCHITECTURES,
    BuildConfig,
    DownstreamBuildConfig,
    PretrainOptions,
    check_pretrain_options,
)
from moe_roma.testbed.model_shapes import active_width, model_config, parameter_counts, shape_of
from moe_roma.training.monitor import warn_on_collapse

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
DOCS = [
    "17 plus 25 is 42 .",
    "The capital of Kenya is Nairobi .",
    "Tom played tennis with Anna on Monday .",
    "What is 3 times 4 ? The answer is 12 .",
    "An apple is a fruit .",
    "12 minus 5 is 7 .",
    "Mia has 12 coins and gives 5 away .",
    "Early is the opposite of late .",
]
LABELS = [
    "addition",
    "geography",
    "general",
    "multiplication",
    "facts",
    "subtraction",
    "word_problems",
    "antonyms",
]


def tiny(**kw) -> DownstreamBuildConfig:
    """A downstream build config small enough for a unit test (same code path as the real one)."""
    base = dict(hidden_size=32, num_layers=2, num_heads=2, steps=4, batch_size=4, warmup=1, seed=0)
    return dataclasses.replace(DownstreamBuildConfig(), **{**base, **kw})


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer(DOCS)


@pytest.fixture(scope="module")
def seqs(tok):
    return encode_documents(tok, DOCS)


# --------------------------------------------------------------------------- architectures


@pytest.mark.parametrize("arch", [a for a in ARCHITECTURES if a != "olmoe"])
def test_every_architecture_saves_and_loads_with_auto_model(arch, tok, tmp_path) -> None:
    from transformers import AutoModelForCausalLM

    cfg = tiny(arch=arch)
    model = make_model(cfg, tok)
    model.save_pretrained(tmp_path)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path)
    assert type(loaded) is type(model)
    family = {"dense": "llama", "nested": "deepseek_v3"}.get(arch, "olmoe")
    assert loaded.config.model_type == family
    ids = torch.tensor([tok("17 plus 25 is 42", add_special_tokens=False)["input_ids"]])
    with torch.no_grad():
        assert torch.allclose(loaded(input_ids=ids).logits, model.eval()(input_ids=ids).logits)


def test_architectures_share_the_active_ffn_width(tok) -> None:
    """Every MoE architecture's routed experts use top_k/E of their weights: exactly the dense FFN."""
    cfg = tiny(arch="dense")
    dense = make_model(cfg, tok)
    ffn = sum(p.numel() for n, p in dense.named_parameters() if ".mlp." in n)
    assert ffn == cfg.num_layers * 3 * cfg.hidden_size * active_width(cfg)
    for arch in ("switch", "switch-16", "switch-32", "topk", "fine", "nested"):
        c = tiny(arch=arch)
        shape = shape_of(c)
        experts = sum(p.numel() for n, p in make_model(c, tok).named_parameters() if ".experts." in n)
        assert experts * shape.top_k / shape.num_experts == ffn, arch
    nested = model_config(tiny(arch="nested"), tok)
    assert (nested.n_group, nested.topk_group, nested.n_routed_experts, nested.num_experts_per_tok) == (
        4,
        2,
        32,
        4,
    )
    counts = parameter_counts(make_model(tiny(arch="switch-32"), tok), tiny(arch="switch-32"))
    assert counts["active"] < counts["total"]


def test_the_default_arch_is_the_committed_models_shape() -> None:
    """``--arch olmoe`` (the default) makes the committed models' configs, and every setting they recorded is
    still the default: ``roma testbed build`` describes them."""
    from transformers import AutoConfig, AutoTokenizer

    for name, cls in (("in-domain", BuildConfig), ("downstream", DownstreamBuildConfig)):
        folder = testbed_model_path(name)
        recorded = json.loads((folder / "build_info.json").read_text())["build_config"]
        defaults = dataclasses.asdict(cls())
        assert {k: defaults[k] for k in recorded} == recorded, name
        made = model_config(cls(), AutoTokenizer.from_pretrained(folder)).to_dict()
        committed = AutoConfig.from_pretrained(folder).to_dict()
        for key in (
            "model_type",
            "num_experts",
            "num_experts_per_tok",
            "intermediate_size",
            "hidden_size",
            "num_hidden_layers",
            "norm_topk_prob",
            "router_aux_loss_coef",
            "tie_word_embeddings",
            "vocab_size",
        ):
            assert made[key] == committed[key], (name, key)
    off = PretrainOptions()
    assert (
        off.arch,
        off.align,
        off.router_init_std,
        off.router_lr_mult,
        off.router_clip,
        off.router_jitter,
        off.router_z_loss,
        off.metrics_every,
    ) == ("olmoe", "none", 0.0, 1.0, 0.0, 0.0, 0.0, 0)


def test_bad_options_are_one_sentence() -> None:
    assert "needs routers" in check_pretrain_options(tiny(arch="dense", align="prior-kl"))
    assert "'moe': arch must be one of olmoe" in check_pretrain_options(tiny(arch="moe"))
    assert check_pretrain_options(tiny(arch="nested", align="manifold")) is None
    assert "align-prior-steps" in check_pretrain_options(
        tiny(align="prior-kl", align_prior="task", align_prior_steps=0)
    )


# --------------------------------------------------------------------------- alignment


def test_lambda_schedules() -> None:
    fixed = tiny(align="prior-kl", steps=100, align_lambda=0.2)
    assert al.lambda_schedule(fixed, 0) == al.lambda_schedule(fixed, 99) == 0.2
    warm = dataclasses.replace(fixed, align_schedule="warmup", align_warmup=0.5)
    assert al.lambda_schedule(warm, 0) == pytest.approx(0.2 / 50) and al.lambda_schedule(warm, 60) == 0.2
    anneal = dataclasses.replace(warm, align_schedule="warmup-anneal", align_final=0.05)
    assert al.lambda_schedule(anneal, 49) == 0.2 and al.lambda_schedule(anneal, 99) == pytest.approx(0.05)
    task = dataclasses.replace(fixed, align_prior="task", align_prior_steps=10)
    assert al.lambda_schedule(task, 9) == 0.0 and al.lambda_schedule(task, 10) == 0.2
    assert al.lambda_schedule(tiny(), 5) == 0.0


def test_task_prior_is_each_tasks_mean_routing() -> None:
    routing = torch.tensor(
        [[[[0.5, 0.5]], [[1.0, 0.0]]], [[[0.0, 1.0]], [[0.2, 0.8]]]]
    )  # (B=2, T=2, L=1, E=2)
    mask = torch.tensor([[1.0, 1.0], [1.0, 0.0]])  # the second document's last token is padding
    prior = al.TaskPrior(3)
    prior.add(routing, mask, torch.tensor([0, 2]))
    q = prior.freeze()
    assert torch.allclose(q[0, 0], torch.tensor([0.75, 0.25])) and torch.allclose(
        q[2, 0], torch.tensor([0.0, 1.0])
    )
    assert torch.allclose(q[1, 0], torch.tensor([0.5, 0.5]))  # unseen task: uniform
    # KL to its own task prior is zero where routing equals the prior; to the uniform prior it is log E - H.
    assert al.prior_kl(routing[1:, :1], mask[1:, :1], q, torch.tensor([2])) < 1e-4
    uni = al.prior_kl(routing[:1, :1], mask[:1, :1], None, torch.tensor([0]))
    assert uni == pytest.approx(0.0, abs=1e-6)


def test_manifold_in_batch_pulls_each_document_towards_its_neighbours() -> None:
    emb = torch.nn.functional.normalize(torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]]), dim=1)
    mask = torch.ones(3, 2)
    same = torch.full((3, 2, 1, 4), 0.25)
    assert al.manifold_in_batch(same, mask, emb, k=1, sigma=0.4) == 0
    routing = torch.softmax(
        torch.randn(3, 2, 1, 4, generator=torch.Generator().manual_seed(0)), -1
    ).requires_grad_()
    loss = al.manifold_in_batch(routing, mask, emb, k=1, sigma=0.4)
    assert loss > 0
    loss.backward()
    assert routing.grad.abs().sum() > 0
    # Document 0's nearest neighbour is 1 (cosine 0.99), not 2.
    doc = routing.detach().mean(1).reshape(3, -1)
    assert loss.item() == pytest.approx(
        float(
            ((doc[0] - doc[1]) ** 2).sum() + ((doc[1] - doc[0]) ** 2).sum() + ((doc[2] - doc[1]) ** 2).sum()
        )
        / 3,
        rel=1e-5,
    )


def _trained_routers(cfg, tok, seqs, tmp_path=None):
    seed_everything(cfg.seed)
    model = make_model(cfg, tok)
    path = None if tmp_path is None else tmp_path / "metrics.jsonl"
    stats = pretrain(
        model, seqs, cfg, tok.pad_token_id, log=lambda _m: None, tasks=task_indices(LABELS), metrics_path=path
    )
    return torch.cat([p.detach().flatten() for p in al.router_parameters(model)]), stats


@pytest.mark.parametrize(
    "align",
    [
        dict(align="prior-kl"),
        dict(align="prior-kl", align_prior="task", align_prior_steps=2),
        dict(align="manifold"),
    ],
)
def test_each_alignment_changes_training(align, tok, seqs) -> None:
    base, _ = _trained_routers(tiny(arch="topk"), tok, seqs)
    aligned, _ = _trained_routers(tiny(arch="topk", align_lambda=5.0, **align), tok, seqs)
    assert not torch.equal(base, aligned)
    again, _ = _trained_routers(tiny(arch="topk", align_lambda=5.0, **align), tok, seqs)
    assert torch.equal(aligned, again)  # deterministic for a seed


def test_metrics_jsonl_records_routing_health(tok, seqs, tmp_path) -> None:
    cfg = tiny(arch="nested", align="prior-kl", metrics_every=2)
    _, stats = _trained_routers(cfg, tok, seqs, tmp_path)
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [2, 4]
    r = rows[-1]
    assert set(r["entropy"]) == set(r["utilisation"]) == set(r["router_grad_norm"]) == {"0", "1"}
    assert all(0 < h <= math.log(32) + 1e-6 for h in r["entropy"].values())
    assert all(g > 0 for g in r["router_grad_norm"].values()) and r["align"] > 0 and r["lambda"] == 0.1
    assert stats["tokens"] == r["tokens"] > 0 and stats["tokens_per_second"] > 0
    assert isinstance(r["warnings"], list)


def test_collapse_warnings_name_the_layer() -> None:
    health = {
        "entropy": {"0": 0.01, "1": 2.0},
        "utilisation": {"0": {"min": 0.0, "max": 0.9}, "1": {"min": 0.1, "max": 0.2}},
    }
    warned: set = set()
    out = warn_on_collapse(health, 8, warned, al.log)
    assert len(out) == 2 and all("layer 0" in w for w in out)
    assert warn_on_collapse(health, 8, warned, al.log) == []  # once per layer and kind


# --------------------------------------------------------------------------- router stability


def test_router_stability_options(tok, seqs) -> None:
    cfg = tiny(arch="switch", router_init_std=1e-4)
    model = make_model(cfg, tok)
    assert max(p.abs().max() for p in al.router_parameters(model)) < 1e-3  # near-uniform routing at the start
    z = al.z_loss([torch.zeros(6, 8)], torch.ones(2, 3))
    assert z == pytest.approx(math.log(8) ** 2)
    hooks = al.add_router_jitter(model, 0.5)
    r = al.routers(model)[0]
    x = torch.ones(3, cfg.hidden_size)
    model.eval()
    assert torch.equal(r(x)[0], r(x)[0])  # no jitter outside training
    model.train()
    assert not torch.equal(r(x)[0], r(x)[0])
    for h in hooks:
        h.remove()
    plain, _ = _trained_routers(tiny(arch="switch"), tok, seqs)
    for option in (
        dict(router_lr_mult=0.1),
        dict(router_clip=1e-4),
        dict(router_jitter=0.1),
        dict(router_z_loss=1.0),
    ):
        changed, _ = _trained_routers(tiny(arch="switch", **option), tok, seqs)
        assert not torch.equal(plain, changed), option


def test_cli_refuses_alignment_without_routers(tmp_path, capsys) -> None:
    from moe_roma.cli import main

    code = main(
        [
            "testbed",
            "build",
            "--testbed",
            "downstream",
            "--arch",
            "dense",
            "--align",
            "prior-kl",
            "--out",
            str(tmp_path / "m"),
        ]
    )
    assert code == 2 and "needs routers" in capsys.readouterr().err
    assert not (tmp_path / "m").exists()


# --------------------------------------------------------------------------- the grid


def test_the_grid_file_plans_every_run() -> None:
    from moe_roma.experiments.pretraining_study import plan_jobs
    from moe_roma.io.yamlfile import load_yaml_mapping

    cfg = load_yaml_mapping(CONFIGS / "architectures.yaml", "x", "y")
    jobs, splits = plan_jobs(cfg, "architectures.yaml", Path("out"))
    assert splits == ["in_dist", "shifted", "heldout_tasks"]
    archs = {"dense", "switch", "switch-16", "switch-32", "topk", "fine", "nested"}
    assert {j.arch for j in jobs} == archs
    settings = {j.setting for j in jobs}
    assert {"none", "fixed", "warmup", "stable"} <= settings
    for arch in archs - {"dense"}:
        assert {j.setting for j in jobs if j.arch == arch} == settings
    assert {j.setting for j in jobs if j.arch == "dense"} == {"none"}  # alignment and stability need routers
    assert {j.seed for j in jobs} == {0, 1}
    assert len({(j.config["steps"], j.config["batch_size"]) for j in jobs}) == 1  # one token budget


def test_the_grid_refuses_unknown_settings(tmp_path) -> None:
    from moe_roma.experiments.pretraining_study import plan_jobs
    from moe_roma.io.errors import RomaError

    cfg = {"kind": "architectures", "architectures": ["switch"], "build": {"stpes": 3}}
    with pytest.raises(RomaError, match="did you mean 'steps'"):
        plan_jobs(cfg, "f.yaml", tmp_path)
    with pytest.raises(RomaError, match="architectures"):
        plan_jobs({"kind": "architectures", "architectures": ["mystery"]}, "f.yaml", tmp_path)


@pytest.mark.slow
def test_ci_grid_runs_and_reports(tmp_path) -> None:
    """configs/ci-architectures.yaml through ``roma experiment``: 2 architectures x 2 settings, 30 steps."""
    from transformers import AutoModelForCausalLM

    from moe_roma.cli import main

    out = tmp_path / "grid"
    assert main(["experiment", str(CONFIGS / "ci-architectures.yaml"), "--out", str(out)]) == 0
    doc = json.loads((out / "results.json").read_text())
    assert len(doc["runs"]) == 4 and len(doc["summary"]) == 4
    for run in doc["runs"]:
        assert set(run["accuracy"]) == {"in_dist", "shifted", "heldout_tasks"} and run["n"]["in_dist"] == 40
        assert run["tokens"] == doc["runs"][0]["tokens"]  # the same token budget for every architecture
        assert 0 < run["active_parameters"] < run["parameters"] and run["entropy"] > 0
        # The continuous scores: the choice cross-entropy is >= 0 and the answer NLL covers it.
        assert all(0 <= run["choice_xent"][s] <= run["answer_nll"][s] for s in run["accuracy"])
        assert run["loss"] > 0
        folder = out / "runs" / run["arch"] / run["setting"] / "seed0" / "model"
        assert (folder / "metrics.jsonl").is_file()
        card = (folder / "README.md").read_text()
        assert "## Failure modes" in card and f"in_dist: {100 * run['accuracy']['in_dist']:.1f}%" in card
        AutoModelForCausalLM.from_pretrained(folder)
    ctgi = {(r["arch"], r["setting"]): r for r in doc["summary"]}
    assert "gain_in_dist" in ctgi[("switch", "warmup")] and ctgi[("switch", "none")]["ctgi"] is None
    table = (out / "table.md").read_text()
    assert "| nested | warmup |" in table and "tokens/s" in table and (out / "accuracy.png").is_file()
    # The ablation: each setting minus none at the same seed.
    run_of = {(r["arch"], r["setting"]): r for r in doc["runs"]}
    delta = ctgi[("nested", "warmup")]["delta"]
    want = (
        run_of[("nested", "warmup")]["accuracy"]["heldout_tasks"]
        - run_of[("nested", "none")]["accuracy"]["heldout_tasks"]
    )
    assert delta["accuracy:heldout_tasks"]["by_seed"] == {"0": pytest.approx(want)}  # seed keys: JSON strings
    assert ctgi[("nested", "none")]["delta"] is None and 0 < ctgi[("nested", "none")]["entropy_norm"] <= 1
    assert "## Ablation: each setting minus `none`, seed by seed" in table
    assert (
        "## Continuous scores" in table and "in_dist choice x-ent" in table and (out / "curves.png").is_file()
    )
    # --resume (of a grid stopped before its table) keeps finished runs and rewrites the same table.
    (out / "results.json").unlink()
    assert main(["experiment", str(CONFIGS / "ci-architectures.yaml"), "--out", str(out), "--resume"]) == 0
    assert json.loads((out / "results.json").read_text())["runs"] == doc["runs"]


def test_resume_reuses_a_build_only_for_the_same_settings_splits_and_limit(tmp_path) -> None:
    from moe_roma.experiments.pretraining_study import finished_job, job_inputs, plan_jobs

    def grid(steps: int) -> dict:
        return {"kind": "architectures", "architectures": ["nested"], "build": {"steps": steps}}

    jobs, splits = plan_jobs(grid(3), "f.yaml", tmp_path)
    job = jobs[0]
    assert not finished_job(job, splits, 0)
    Path(job.out).mkdir(parents=True)
    (Path(job.out) / "result.json").write_text(
        json.dumps({"accuracy": {}, "inputs": job_inputs(job, splits, 0)})
    )
    assert finished_job(job, splits, 0)
    assert not finished_job(job, splits, 10) and not finished_job(job, splits[:1], 0)
    changed, _ = plan_jobs(grid(4), "f.yaml", tmp_path)  # the same folder, another build setting
    assert changed[0].out == job.out and not finished_job(changed[0], splits, 0)


def test_score_summary_reads_accuracy_and_the_continuous_scores_from_one_pass(monkeypatch) -> None:
    """Accuracy, the right answer's NLL and the choice cross-entropy, from known choice log-probabilities."""
    from moe_roma.data.example import MCExample
    from moe_roma.testbed import scoring

    examples = [
        MCExample(id="a", task="t", question="q", choices=["x", "y"], answer=0),
        MCExample(id="b", task="u", question="q", choices=["x", "y"], answer=1),
    ]
    logprobs = [[-1.0, -2.0], [-1.0, -3.0]]
    monkeypatch.setattr(scoring, "choice_logprobs", lambda *a, **k: logprobs)
    got = scoring.score_summary(None, None, examples)
    assert got["accuracy"] == {"all": 0.5, "t": 1.0, "u": 0.0}
    assert got["answer_nll"] == pytest.approx((1.0 + 3.0) / 2)
    xent_a = math.log(math.exp(-1) + math.exp(-2)) + 1.0
    xent_b = math.log(math.exp(-1) + math.exp(-3)) + 3.0
    assert got["choice_xent"] == pytest.approx((xent_a + xent_b) / 2)
    assert scoring.accuracy_by_task(None, None, examples) == got["accuracy"]
