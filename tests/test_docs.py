"""The documentation stays true: every training setting is documented, the Python examples run, and
the README's figures and layout match their sources."""

from __future__ import annotations

import ast
import re
import statistics
from pathlib import Path

import pytest

from helpers.examples import make_examples, write_data
from helpers.tiny_models import FAMILIES, save_tiny_model
from moe_roma.io.config import settings
from moe_roma.methods.roma.config import TrainConfig

ROOT = Path(__file__).resolve().parents[1]


def python_blocks(markdown: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", markdown.read_text(encoding="utf-8"), flags=re.S)


def readme() -> str:
    return (ROOT / "README.md").read_text(encoding="utf-8")


def documented_defaults() -> dict[str, str]:
    rows = re.findall(
        r"^\| `([\w.]+)` \| ([^|]+) \|", (ROOT / "docs" / "training.md").read_text(), flags=re.M
    )
    return {name: default.strip() for name, default in rows}


def test_every_training_setting_is_in_the_table_with_its_default():
    documented = documented_defaults()
    for setting in settings(TrainConfig):
        assert setting.path in documented, f"docs/training.md does not document {setting.path}"
        if setting.default is None:
            want = "none"
        elif isinstance(setting.default, bool):
            want = str(setting.default).lower()
        else:
            want = str(setting.default)
        if isinstance(setting.default, float):
            assert float(documented[setting.path]) == setting.default, setting.path
        else:
            assert documented[setting.path] == want, setting.path
    assert set(documented) <= {s.path for s in settings(TrainConfig)}, "a documented setting does not exist"


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    root = tmp_path_factory.mktemp("docs")
    save_tiny_model(root / "base", "olmoe", num_layers=4)
    write_data(root / "train.jsonl", make_examples(16))
    return root


@pytest.mark.slow
def test_readme_and_training_doc_python_examples_run(base, monkeypatch):
    monkeypatch.chdir(base)
    readme = python_blocks(ROOT / "README.md")
    assert len(readme) == 1
    # The tiny model has 4 MoE layers: the README's last5 would be refused (it asks for more than there are).
    code = (
        readme[0]
        .replace("path/to/moe-model", "base")
        .replace('schedule={"epochs": 3}', 'schedule={"epochs": 1}')
        .replace('layers="last5"', 'layers="last2"')
        .replace("train_config(", 'train_config(layers="last2", ')
    )
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)
    assert scope["result"].steps == 1 and (base / "runs/x/roma/router_weights.safetensors").is_file()
    # The training doc starts from the routing file that the README's collection would write.
    from moe_roma.routing.store import save_routing_store

    save_routing_store(scope["store"], base / "obqa_train.json")
    (base / "my.yaml").write_text("layers: last2\nschedule: {batch_size: 8}\n")
    training = python_blocks(ROOT / "docs" / "training.md")
    assert len(training) == 1
    scope = {}
    exec(compile(training[0], "docs/training.md", "exec"), scope)
    result, config = scope["result"], scope["config"]
    assert (config.regularizer.lam, config.schedule.epochs, config.schedule.batch_size, config.layers) == (
        0.5,
        2,
        8,
        "last2",
    )
    assert result.steps == 4 and result.tuned_layers == [2, 3]


def _dict_keys(path: Path, name: str) -> set[str]:
    """The keys of a module-level dict literal, read without importing the module (a test file)."""
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        targets = [t.id for t in getattr(node, "targets", []) if isinstance(t, ast.Name)]
        if name in targets:
            return {ast.literal_eval(key) for key in node.value.keys}
    raise AssertionError(f"{path.name} defines no {name}")


def test_readme_families_are_the_discovery_tests():
    text = readme()
    families = re.search(r"\*\*(\d+) MoE causal-LM families\*\* of transformers (\d+\.\d+)", text)
    count, version = families.groups()
    assert int(count) == len(FAMILIES), "README's family count vs tests/helpers/tiny_models.py FAMILIES"
    pinned = re.search(r"^transformers==(\d+\.\d+)", (ROOT / "requirements" / "test.lock").read_text(), re.M)
    assert version == pinned.group(1), "README names the transformers release the lock pins"
    listed = re.search(r"expert choice:\n\n(.*?)\.\n\n", text, re.S).group(1)
    # The README names a family without transformers' "_text" suffix of its text-only config.
    assert [n.strip() for n in listed.split(",")] == sorted(f.removesuffix("_text") for f in FAMILIES)
    cannot = _dict_keys(ROOT / "tests" / "test_override.py", "CANNOT_OVERRIDE")
    works, total = re.search(r"work on (\d+) of the (\d+)", text).groups()
    assert (int(works), int(total)) == (len(FAMILIES) - len(cannot), len(FAMILIES))


def test_readme_scoring_speed_is_the_benchmark_results():
    results = (ROOT / "benchmarks" / "RESULTS.md").read_text(encoding="utf-8")
    summary = r"^\| continuation scoring vs lm-evaluation-harness.*?\*\*([\d.]+-[\d.]+x)\*\* over (\d+) runs"
    row = re.search(summary, results, re.M)
    runs = re.search(r"Continuation speed-up over the (\d+) runs: ([^(]*)\(", results)
    per_run = [float(x) for x in re.findall(r"([\d.]+)x", runs.group(2))]
    assert len(per_run) == int(runs.group(1)) == int(row.group(2))
    quoted = re.search(
        r"is ([\d.]+-[\d.]+x) its speed\s+\(median ([\d.]+)x over (\d+) runs, (20\d\d-\d\d-\d\d)", readme()
    )
    assert quoted, (
        "README's Speed section: continuation scoring 'is A-Bx its speed (median Mx over N runs, DATE'"
    )
    measured = re.search(r"### Evaluation: `benchmarks/eval.py`.*?Measured (20\d\d-\d\d-\d\d)", results, re.S)
    assert quoted.group(4) == measured.group(1), "README's date of the speed-up vs benchmarks/RESULTS.md's"
    assert quoted.group(1) == row.group(1), "README's range vs benchmarks/RESULTS.md's summary table"
    assert quoted.group(2) == f"{statistics.median(per_run):.2f}"
    assert int(quoted.group(3)) == len(per_run)


# A measured figure: an accuracy or share to a decimal, a difference in points, seconds, a speed-up,
# a rate, memory. And what says when it was measured: a date, or the commit it was measured at.
MEASURED = re.compile(r"\d+\.\d+%|\d+\.\d+ points|\b\d+(?:\.\d+)? s\b|\b\d+\.\d+x\b|samples/s|[GM]iB")
WHEN = re.compile(r"\b20\d\d-\d\d-\d\d\b|\bcommit [0-9a-f]{7,40}\b")


def markdown_blocks(text: str) -> list[str]:
    """Paragraphs, lists and tables (separated by blank lines), and each fenced block whole."""
    blocks, current, fenced = [], [], False
    for line in text.splitlines():
        if line.startswith("```"):
            fenced = not fenced
        if line.strip() or fenced:
            current.append(line)
        elif current:
            blocks.append("\n".join(current))
            current = []
    return blocks + (["\n".join(current)] if current else [])


def undated_figures(text: str) -> list[str]:
    """The blocks of a markdown text with a measured figure but no date or commit in themselves or
    earlier in their ``## `` section."""
    out, dated = [], False
    for block in markdown_blocks(text):
        if block.startswith("## "):
            dated = False
        dated = dated or bool(WHEN.search(block))
        if MEASURED.search(block) and not dated:
            out.append(block[:120])
    return out


def test_every_readme_figure_says_when_it_was_measured():
    """A figure measured once goes stale silently: each carries its date or commit, in its block or
    earlier in its section (a table or a printed output after the sentence that dates it)."""
    assert not undated_figures(readme()), undated_figures(readme())
    assert undated_figures("## Speed\n\nIt runs at 2.26x its speed.\n") == ["It runs at 2.26x its speed."]
    assert not undated_figures("## Speed\n\nOn 2026-11-30:\n\n| a | 1.5 s |\n")


def test_both_layout_tables_list_every_package():
    package = ROOT / "src" / "moe_roma"
    packages = sorted(p.parent.relative_to(package) for p in package.rglob("*/__init__.py"))
    layout = re.search(r"## Layout\n.*?```\n(.*?)```", readme(), re.S).group(1)
    architecture = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    rows = dict(re.findall(r"^\| `(\w+)/` \| (.*) \|$", architecture, re.M))
    for sub in packages:
        assert re.search(rf"^\s+{sub.name}/ ", layout, re.M), f"README's Layout lacks {sub}/"
        top = sub.parts[0]
        assert top in rows, f"docs/architecture.md's package table lacks {top}/"
        if len(sub.parts) > 1:
            assert f"`{sub.name}/`" in rows[top], f"docs/architecture.md's {top}/ row lacks {sub.name}/"
