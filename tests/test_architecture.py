"""The package's layers: imports only run downward (docs/architecture.md).

Each top-level package of ``moe_roma`` has a rank; a module may import modules of its own package
or of a lower rank, never of a higher one. Imports inside functions count too: a lazy import that
runs upward is still an upward dependency.
"""

from __future__ import annotations

import ast
from pathlib import Path

import moe_roma

# Bottom to top. ``moe_roma/__init__.py`` (the version) sits below everything.
LAYERS = [
    "io", "data", "models", "scoring", "routing", "manifold", "report", "methods", "distributed", "eval",
    "diagnose", "testbed", "experiments", "commands", "cli",
]  # fmt: skip
RANK = {name: i for i, name in enumerate(LAYERS)}
# Inside methods/, the shared per-item machinery sits below every method.
METHODS_COMMON = "methods.common"
PACKAGE = Path(moe_roma.__file__).parent


def _layer(module: str) -> str | None:
    """``moe_roma.methods.roma.trainer`` -> ``methods``; the package root -> None (allowed anywhere)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def _imports(path: Path) -> list[tuple[int, str]]:
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "moe_roma":
                out += [(node.lineno, f"moe_roma.{alias.name}") for alias in node.names]
            elif node.module.startswith("moe_roma."):
                out.append((node.lineno, node.module))
        elif isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names if a.name.startswith("moe_roma.")]
    return out


def _module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def upward_imports() -> list[str]:
    problems = []
    for path in sorted(PACKAGE.rglob("*.py")):
        source = _module_name(path)
        src_layer = _layer(source)
        if src_layer is None:
            continue
        if src_layer not in RANK:
            problems.append(f"{source}: package {src_layer!r} has no place in LAYERS")
            continue
        for line, target in _imports(path):
            dst_layer = _layer(target)
            if dst_layer is None or dst_layer == "__version__":
                continue
            if dst_layer not in RANK:
                problems.append(f"{source}:{line} imports {target}, whose package has no place in LAYERS")
            elif RANK[dst_layer] > RANK[src_layer]:
                problems.append(f"{source}:{line} imports {target}: {src_layer} may not import {dst_layer}")
            elif source.startswith(f"moe_roma.{METHODS_COMMON}") and target.startswith("moe_roma.methods.") and (
                not target.startswith(f"moe_roma.{METHODS_COMMON}")
            ):
                problems.append(f"{source}:{line} imports {target}: methods/common may not import a method")
    return problems


def test_imports_only_run_down_the_layers():
    problems = upward_imports()
    assert not problems, "\n".join(problems)


def test_the_check_sees_an_upward_import(tmp_path, monkeypatch):
    """The checker itself: a module of a low layer importing a high one is reported."""
    fake = tmp_path / "moe_roma"
    (fake / "data").mkdir(parents=True)
    (fake / "__init__.py").write_text("")
    (fake / "data" / "__init__.py").write_text("")
    (fake / "data" / "bad.py").write_text("def f():\n    from moe_roma.experiments.demo import run_demo\n")
    monkeypatch.setattr(__import__(__name__), "PACKAGE", fake)
    assert upward_imports() == [
        "moe_roma.data.bad:2 imports moe_roma.experiments.demo: data may not import experiments"
    ]
