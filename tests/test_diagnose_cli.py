"""`roma diagnose` end to end: a routing file in, report and pictures out; honest 'cannot tell' cases."""

from __future__ import annotations

import json

import numpy as np
import pytest

from moe_roma.cli import main


def seed001_routing(path, n: int, correct=lambda i: i % 3 != 0, experts: int = 8, layers=(2, 3)):
    """A routing file as another tool writes it (RoMA-code JSON, sparse expert dicts, no side-car)."""
    rng = np.random.default_rng(0)
    tasks = ["arithmetic", "geography", "colours"]
    data = {}
    for i in range(n):
        task = tasks[i % 3]
        entry_layers = []
        for layer in layers:
            w = rng.dirichlet(np.ones(experts) * 0.5)
            entry_layers.append(
                {
                    "layer": layer,
                    "routing_weights": {f"expert_{e}": float(w[e]) for e in range(experts) if w[e] > 0.01},
                }
            )
        data[f"q{i}"] = {
            "input_text": f"Question: {task} question number {i} about {task}?\nAnswer:",
            "last_token_routing": {"token_id": 7, "token_text": ":", "layers": entry_layers},
            "correct_answer": "A",
            "model_answer": "A" if correct(i) else "B",
            "is_correct": bool(correct(i)),
        }
    path.write_text(json.dumps(data))
    return path


def test_diagnose_reads_another_tools_routing_file_and_writes_the_report(tmp_path, capsys):
    routing = seed001_routing(tmp_path / "routing.json", 60)
    assert main(["diagnose", "--routing", str(routing), "--out", str(tmp_path / "d")]) == 0
    report = json.loads((tmp_path / "d" / "report.json").read_text())
    assert report["n"] == 60 and report["success"]["n_successful"] == 40 and report["layers"] == [2, 3]
    assert report["cannot_tell"] == []
    assert 0 <= report["alignment"]["cka"] <= 1 and len(report["alignment"]["per_layer"]) == 2
    assert report["correctness_signal"]["auc_routing"]["mean"] is not None
    assert report["room_to_move"]["p_value"] is not None
    for name in ("report.md", "maps.png", "layer_alignment.png"):
        assert (tmp_path / "d" / name).stat().st_size > 300, name
    assert "Room to move" in (tmp_path / "d" / "report.md").read_text()


@pytest.mark.parametrize(
    "n, correct, reason",
    [
        (12, lambda i: i % 2 == 0, "only 12 items"),
        (30, lambda i: True, "every item is answered right"),
        (30, lambda i: False, "no item is answered right"),
    ],
)
def test_diagnose_says_cannot_tell_and_why(tmp_path, capsys, n, correct, reason):
    routing = seed001_routing(tmp_path / "routing.json", n, correct)
    assert main(["diagnose", "--routing", str(routing), "--out", str(tmp_path / "d")]) == 0
    report = json.loads((tmp_path / "d" / "report.json").read_text())
    assert any(reason in r for r in report["cannot_tell"]), report["cannot_tell"]
    assert "correctness_signal" not in report
    assert reason in (tmp_path / "d" / "report.md").read_text()
    assert report["verdict"]["label"] == "cannot tell" and reason in report["verdict"]["why"]


def test_an_embedder_that_cannot_be_loaded_is_one_sentence(tmp_path, capsys):
    routing = seed001_routing(tmp_path / "routing.json", 30)
    code = main(
        [
            "diagnose",
            "--routing",
            str(routing),
            "--out",
            str(tmp_path / "d"),
            "--embedder",
            str(tmp_path / "no-such-embedder"),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert "no-such-embedder" in err and not (tmp_path / "d" / "report.json").exists()


def test_layers_outside_the_file_are_refused(tmp_path, capsys):
    routing = seed001_routing(tmp_path / "routing.json", 30)
    code = main(["diagnose", "--routing", str(routing), "--out", str(tmp_path / "d"), "--layers", "5,6"])
    err = capsys.readouterr().err
    assert code == 2 and "not among the recorded layers [2, 3]" in err


def test_collect_embed_stores_embeddings_that_diagnose_reuses(resume_workspace, tmp_path, capsys):
    """`roma collect --embed` puts the question embeddings in the side-car; `roma diagnose` then needs no
    embedder, and measures exactly what it measures when it embeds the questions itself."""
    import numpy as np

    from moe_roma.diagnose.run import diagnose_routing
    from moe_roma.manifold.embed import embed_texts
    from moe_roma.routing.store import load_routing_store

    w = resume_workspace
    out = tmp_path / "routing.json"
    assert (
        main(
            [
                "collect",
                "--model",
                str(w / "model"),
                "--data",
                str(w / "train.jsonl"),
                "--out",
                str(out),
                "--layers",
                "last2",
                "--embed",
                "--no-progress",
            ]
        )
        == 0
    )
    store = load_routing_store(out)
    assert store.meta["embedder"] == "all-MiniLM-L6-v2" and store.embeddings.shape == (24, 384)
    fresh = embed_texts([q or x for q, x in zip(store.questions, store.input_texts)])
    np.testing.assert_allclose(store.embeddings.numpy(), fresh, rtol=1e-5, atol=1e-6)
    said: list[str] = []
    reused = diagnose_routing(store, log=said.append)
    assert any("using the embeddings stored with the routing" in s for s in said)
    plain = load_routing_store(w / "routing.json")  # collected without --embed
    assert plain.embeddings is None
    again = diagnose_routing(plain, log=said.append)
    assert reused["alignment"]["cka"] == pytest.approx(again["alignment"]["cka"], abs=1e-5)
    # Another embedder than the stored one is honoured: the stored embeddings are not used for it.
    said.clear()
    from moe_roma.io.errors import RomaError

    with pytest.raises(RomaError, match="no-such-embedder"):
        diagnose_routing(store, embedder=str(tmp_path / "no-such-embedder"), log=said.append)
    assert not any("using the embeddings stored" in s for s in said)


def test_diagnose_follows_the_recorded_top_k_else_the_model_else_says_it_assumes(
    resume_workspace, tmp_path, capsys
):
    """The k of the utilisation measure comes from --top-k, else the routing file (collect records it),
    else --model, else 2 with a one-line warning; report.json and report.md say which. --top-k 0 is a
    usage error, a k above the file's experts is refused: never a silent default."""
    import shutil

    w = resume_workspace
    from moe_roma.models.discovery import discover_routers
    from moe_roma.models.loading import load_model
    from moe_roma.routing.store import load_routing_store

    recorded = load_routing_store(w / "routing.json").meta["top_k"]
    model, _ = load_model(str(w / "model"))
    assert recorded == max(r.top_k for r in discover_routers(model).routers.values())

    def diagnose(routing, out, *extra):
        code = main(["diagnose", "--routing", str(routing), "--out", str(tmp_path / out), *extra])
        err = capsys.readouterr().err
        report = json.loads((tmp_path / out / "report.json").read_text()) if code == 0 else None
        return code, err, report

    code, err, report = diagnose(w / "routing.json", "d1")
    assert (
        code == 0
        and "warning" not in err
        and (report["top_k"], report["top_k_from"])
        == (
            recorded,
            "the routing file",
        )
    )
    assert report["routing_health"]["top_k"] == recorded
    assert (
        f"k = {recorded} experts per token (the routing file)" in (tmp_path / "d1" / "report.md").read_text()
    )
    bare = tmp_path / "bare" / "routing.json"  # the JSON alone: another tool's file records no top-k
    bare.parent.mkdir()
    shutil.copy(w / "routing.json", bare)
    code, err, report = diagnose(bare, "d2")
    assert code == 0 and (report["top_k"], report["top_k_from"]) == (2, "assumed")
    assert err.count("\n") == 1 and "warning: " in err and "records no top_k" in err and "--top-k K" in err
    code, err, report = diagnose(bare, "d3", "--model", str(w / "model"), "--no-target-test")
    assert (
        code == 0
        and "warning" not in err
        and (report["top_k"], report["top_k_from"]) == (recorded, "the model")
    )
    code, err, report = diagnose(bare, "d4", "--top-k", "3")
    assert code == 0 and (report["top_k"], report["top_k_from"]) == (3, "--top-k")
    for k in ("0", "99"):
        code, err, _ = diagnose(w / "routing.json", "d5", "--top-k", k)
        assert code == 2 and err.count("\n") == 1 and "Traceback" not in err and "--top-k" in err, err
        assert not (tmp_path / "d5").exists()


def test_a_full_disk_while_drawing_names_the_picture_and_keeps_the_old_report(tmp_path, capsys, monkeypatch):
    """matplotlib's own write fails (a full disk, `ulimit -f`) without naming its file: the sentence
    names the picture, and the report of the earlier run stays as it was."""
    import errno

    routing = seed001_routing(tmp_path / "routing.json", 60)
    out = tmp_path / "d"
    top_k = ["--top-k", "2"]  # another tool's file records no top-k: no warning line
    assert main(["diagnose", "--routing", str(routing), "--out", str(out), *top_k]) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    capsys.readouterr()

    def file_too_large(*args, **kwargs):
        raise OSError(errno.EFBIG, "File too large")

    monkeypatch.setattr("moe_roma.report.diagnose.plot_maps", file_too_large)
    code = main(["diagnose", "--routing", str(routing), "--out", str(out), "--overwrite", *top_k])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    assert f"--out {out}: maps.png could not be written (File too large)" in err and "kept" in err, err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no staging folder left
