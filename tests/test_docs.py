"""The documentation stays true: every training setting is documented, and the Python examples run."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from moe_roma.methods.roma.config import TrainConfig
from test_cli_pipeline import write_data
from test_collect import make_examples
from tiny_models import save_tiny_model

ROOT = Path(__file__).resolve().parents[1]


def python_blocks(markdown: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", markdown.read_text(encoding="utf-8"), flags=re.S)


def documented_defaults() -> dict[str, str]:
    rows = re.findall(r"^\| `(\w+)` \| ([^|]+) \|", (ROOT / "docs" / "training.md").read_text(), flags=re.M)
    return {name: default.strip() for name, default in rows}


def test_every_training_setting_is_in_the_table_with_its_default():
    documented = documented_defaults()
    for field in dataclasses.fields(TrainConfig):
        assert field.name in documented, f"docs/training.md does not document {field.name}"
        if field.default is None:
            want = "none"
        elif isinstance(field.default, bool):
            want = str(field.default).lower()
        else:
            want = str(field.default)
        if isinstance(field.default, float):
            assert float(documented[field.name]) == field.default, field.name
        else:
            assert documented[field.name] == want, field.name
    assert set(documented) <= {f.name for f in dataclasses.fields(TrainConfig)}, "a documented setting does not exist"


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
    code = readme[0].replace("path/to/moe-model", "base").replace("TrainConfig(epochs=3", "TrainConfig(epochs=1")
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)
    assert scope["result"].steps == 1 and (base / "runs/x/roma/router_weights.safetensors").is_file()
    # The training doc starts from the routing file that the README's collection would write.
    from moe_roma.routing.store import save_routing_store

    save_routing_store(scope["store"], base / "obqa_train.json")
    (base / "my.yaml").write_text("layers: last2\nbatch_size: 8\n")
    training = python_blocks(ROOT / "docs" / "training.md")
    assert len(training) == 1
    scope = {}
    exec(compile(training[0], "docs/training.md", "exec"), scope)
    result, config = scope["result"], scope["config"]
    assert (config.lam, config.epochs, config.batch_size, config.layers) == (0.5, 2, 8, "last2")
    assert result.steps == 4 and result.tuned_layers == [2, 3]
