"""The documentation stays true: every training setting is documented, and the Python examples run."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from helpers.examples import make_examples, write_data
from helpers.tiny_models import save_tiny_model
from moe_roma.io.config import settings
from moe_roma.methods.roma.config import TrainConfig

ROOT = Path(__file__).resolve().parents[1]


def python_blocks(markdown: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", markdown.read_text(encoding="utf-8"), flags=re.S)


def documented_defaults() -> dict[str, str]:
    rows = re.findall(r"^\| `([\w.]+)` \| ([^|]+) \|", (ROOT / "docs" / "training.md").read_text(), flags=re.M)
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
    code = (readme[0].replace("path/to/moe-model", "base").replace("train_config(epochs=3", "train_config(epochs=1")
            .replace('layers="last5"', 'layers="last2"').replace("train_config(", 'train_config(layers="last2", '))  # fmt: skip
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
    assert (config.regularizer.lam, config.schedule.epochs, config.schedule.batch_size, config.layers) == (0.5, 2, 8, "last2")
    assert result.steps == 4 and result.tuned_layers == [2, 3]
