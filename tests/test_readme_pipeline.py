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
