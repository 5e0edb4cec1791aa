"""The README's pipeline, run literally on the bundled in-domain testbed, gives `roma testbed eval`'s numbers.

Every ``roma`` line of the README's "pipeline, step by step" block runs as written. Only the
placeholders are filled in: ``MODEL`` is the bundled in-domain model, ``train.jsonl`` and
``test.jsonl`` are its ``train`` and ``in_dist`` splits as ``roma testbed export`` writes them, the
data file that step 1 inspects is the exported train split, and ``runs/x`` lies in a temporary
folder. Then the base accuracy that ``roma eval`` reports for ``test.jsonl`` must be the one
``roma testbed eval`` reports for ``in_dist``: a new user following the README scores what the
model was trained on.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest

from moe_roma.cli import build_parser, main

ROOT = Path(__file__).resolve().parents[1]


def readme_pipeline() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## The pipeline, step by step", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, flags=re.S).group(1)
    lines = []
    for line in block.splitlines():
        line = line.split("#", 1)[0].strip() if not line.lstrip().startswith("#") else ""
        if line.startswith("roma "):
            lines.append(line)
    return lines


def fill(line: str, model: Path, data: Path, runs: Path) -> list[str]:
    words = shlex.split(line)[1:]
    out = []
    for word in words:
        word = {
            "MODEL": str(model),
            "train.jsonl": str(data / "train.jsonl"),
            "test.jsonl": str(data / "in_dist.jsonl"),
            "../shared/data/benchmarks/arc_challenge.jsonl": str(data / "train.jsonl"),
        }.get(word, word)
        out.append(word.replace("runs/x", str(runs)))
    return out


@pytest.mark.slow
def test_the_readme_pipeline_scores_what_the_testbed_scores(tmp_path, capsys, monkeypatch):
    from moe_roma.testbed import testbed_model_path

    model = testbed_model_path("in-domain")
    data, runs = tmp_path / "data", tmp_path / "runs" / "x"
    assert (
        main(
            [
                "testbed",
                "export",
                "--testbed",
                "in-domain",
                "--out",
                str(data),
                "--splits",
                "train",
                "in_dist",
            ]
        )
        == 0
    )
    known = set(build_parser()._subparsers._group_actions[0].choices)  # type: ignore[union-attr]
    lines = readme_pipeline()
    assert len(lines) >= 7 and {shlex.split(x)[1] for x in lines} <= known, lines
    monkeypatch.chdir(tmp_path)
    for line in lines:
        capsys.readouterr()
        argv = fill(line, model, data, runs)
        code = main(argv)
        assert code == 0, (line, capsys.readouterr().err)
    report = json.loads((runs / "eval.json").read_text())
    capsys.readouterr()
    assert main(["testbed", "eval", "--testbed", "in-domain", "--splits", "in_dist", "--json"]) == 0
    testbed = json.loads(capsys.readouterr().out)
    want = testbed["in_dist"]["all"]
    assert report["base"]["acc"] == pytest.approx(want, abs=1e-9), (report["base"]["acc"], want)


def readme_diagnose_block() -> list[str]:
    """The command lines of the README's "Will RoMA help my model?" block, as written."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## Will RoMA help my model?", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", section, flags=re.S).group(1)
    return [x.split(" #", 1)[0].strip() for x in block.splitlines() if x.strip() and not x.startswith("#")]


READS = ("--data", "--routing", "--items", "--model")  # the options whose value a command reads


def test_the_readme_diagnose_block_reads_only_what_it_made_or_the_clone_holds():
    """From a fresh clone: every file a line of the block reads is written by an earlier line (a
    `--out` file, or a split of `roma testbed export`'s folder), or is committed (the testbed model);
    nothing is read from results/ or another folder the block did not make."""
    import subprocess

    from moe_roma.testbed import testbed_split_names

    lines = readme_diagnose_block()
    assert lines[0].startswith("roma testbed export"), "the block must say where train.jsonl comes from"
    variables: dict[str, str] = {}
    made: set[str] = set()
    committed = subprocess.run(
        ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=False
    ).stdout.split()
    for line in lines:
        if re.fullmatch(r"[A-Z]+=\S+", line):
            name, value = line.split("=", 1)
            variables[name] = value
            continue
        words = [variables.get(w[1:], w) if w.startswith("$") else w for w in shlex.split(line)]
        assert words[0] == "roma", line
        for option, value in zip(words, words[1:]):
            if option not in READS:
                continue
            if value in made:
                continue
            assert value in variables.values() and (
                not committed or any(f.startswith(value.rstrip("/") + "/") for f in committed)
            ), f"{line}: {option} {value} is neither written by an earlier line nor committed"
        out = words[words.index("--out") + 1]
        if words[1:3] == ["testbed", "export"]:
            testbed = words[words.index("--testbed") + 1] if "--testbed" in words else "downstream"
            made |= {f"{out}/{split}.jsonl" for split in testbed_split_names(testbed)}
        else:
            made.add(out)


@pytest.mark.slow
def test_the_readme_diagnose_block_runs_from_an_empty_folder(tmp_path, capsys, monkeypatch):
    """The block, run as written in an empty folder (the committed model beside it, as in a clone), on
    a tiny scale: each collect reads its first 40 items (`--limit 40`) and the oracle 8 items; every
    line exits 0, both reports are written, and diagnose follows the top-k the routing file recorded."""
    lines = readme_diagnose_block()
    monkeypatch.chdir(tmp_path)
    variables: dict[str, str] = {}
    for line in lines:
        if re.fullmatch(r"[A-Z]+=\S+", line):
            name, value = line.split("=", 1)
            variables[name] = str(ROOT / value)  # the clone's committed model
            continue
        words = [variables.get(w[1:], w) if w.startswith("$") else w for w in shlex.split(line)][1:]
        if words[0] == "collect":
            words += ["--limit", "40", "--no-progress"]
        if words[0] == "diagnose":
            words += ["--no-progress"]
            if "--oracle" in words:
                words[words.index("--oracle") + 1] = "8"
        capsys.readouterr()
        assert main(words) == 0, (line, capsys.readouterr().err)
        said = capsys.readouterr().out
        if words[0] == "diagnose":
            assert "Verdict: " in said, said
            out = tmp_path / words[words.index("--out") + 1]
            report = json.loads((out / "report.json").read_text())
            assert report["top_k_from"] == "the routing file" and (out / "report.md").is_file()
