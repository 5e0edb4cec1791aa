"""The package's layers: imports only run downward (docs/architecture.md).

Each top-level package of ``moe_roma`` has a rank; a module may import modules of its own package
or of a lower rank, never of a higher one. Imports inside functions count too: a lazy import that
runs upward is still an upward dependency. Inside a package, the modules' imports form no circle
either (the layers alone would allow ``registry -> c3po -> registry``). Every third-party package
the code imports is declared in pyproject.toml.
"""

from __future__ import annotations

import ast
import re
import sys
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest

import moe_roma

# Bottom to top. ``moe_roma/__init__.py`` (the version) sits below everything.
LAYERS = [
    "io",
    "data",
    "models",
    "scoring",
    "routing",
    "manifold",
    "training",
    "report",
    "methods",
    "distributed",
    "eval",
    "diagnose",
    "testbed",
    "experiments",
    "commands",
    "cli",
]
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
            elif (
                source.startswith(f"moe_roma.{METHODS_COMMON}")
                and target.startswith("moe_roma.methods.")
                and (not target.startswith(f"moe_roma.{METHODS_COMMON}"))
            ):
                problems.append(f"{source}:{line} imports {target}: methods/common may not import a method")
    return problems


def _imported_names(path: Path) -> list[str]:
    """Every ``moe_roma`` name a module imports, in full: ``from moe_roma.testbed import tasks`` gives
    ``moe_roma.testbed.tasks`` (a module), ``from moe_roma.io.errors import RomaError`` gives
    ``moe_roma.io.errors.RomaError`` (resolved to its module by ``_resolve``)."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out += [f"{node.module}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Import):
            out += [alias.name for alias in node.names]
    return [name for name in out if name.startswith("moe_roma.")]


def _resolve(target: str, modules: set[str]) -> str:
    """``from moe_roma.methods import registry`` names the module ``moe_roma.methods.registry``."""
    while target not in modules and "." in target:
        target = target.rsplit(".", 1)[0]
    return target


def import_circles() -> list[str]:
    """Every strongly connected group of modules (Tarjan), written as one circle through it."""
    paths = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}
    modules = set(paths)
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for name, path in paths.items():
        for target in _imported_names(path):
            resolved = _resolve(target, modules)
            if resolved in modules and resolved != name:
                graph[name].add(resolved)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return [_circle_through(group, graph) for group in sorted(groups)]


def _circle_through(group: list[str], graph: dict[str, set[str]]) -> str:
    """A shortest circle from the group's first module back to itself, for the message."""
    start, members = group[0], set(group)
    previous: dict[str, str] = {}
    frontier = [start]
    while frontier:
        nxt_frontier = []
        for node in frontier:
            for nxt in sorted(graph[node] & members):
                if nxt == start:
                    path = [start]
                    while node != start:
                        path.append(node)
                        node = previous[node]
                    return " -> ".join([start, *reversed(path[1:]), start])
                if nxt not in previous:
                    previous[nxt] = node
                    nxt_frontier.append(nxt)
        frontier = nxt_frontier
    raise AssertionError(f"no circle through {group}")  # a strongly connected group always has one


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


def test_no_import_circles():
    circles = import_circles()
    assert not circles, "\n".join(circles)


def test_the_check_sees_an_import_circle(tmp_path, monkeypatch):
    """The checker itself: two modules of one package importing each other (one lazily) are reported."""
    fake = tmp_path / "moe_roma"
    (fake / "methods").mkdir(parents=True)
    (fake / "__init__.py").write_text("")
    (fake / "methods" / "__init__.py").write_text("")
    (fake / "methods" / "registry.py").write_text("from moe_roma.methods import c3po\n")
    (fake / "methods" / "c3po.py").write_text("def f():\n    from moe_roma.methods.registry import METHODS\n")
    (fake / "methods" / "base.py").write_text("")
    monkeypatch.setattr(__import__(__name__), "PACKAGE", fake)
    assert import_circles() == ["moe_roma.methods.c3po -> moe_roma.methods.registry -> moe_roma.methods.c3po"]


def test_the_check_sees_a_circle_through_a_package_init(tmp_path, monkeypatch):
    """In any package, not only methods/: a package's ``__init__`` that imports a module which imports
    a name back from the package is a circle too."""
    fake = tmp_path / "moe_roma"
    (fake / "testbed").mkdir(parents=True)
    (fake / "__init__.py").write_text("")
    (fake / "testbed" / "__init__.py").write_text("from moe_roma.testbed.build import pretrain\nPATH = 1\n")
    (fake / "testbed" / "build.py").write_text("from moe_roma.testbed import PATH\n")
    monkeypatch.setattr(__import__(__name__), "PACKAGE", fake)
    assert import_circles() == ["moe_roma.testbed -> moe_roma.testbed.build -> moe_roma.testbed"]


def test_methods_register_themselves():
    """The registry imports no method, and no method imports the registry: both import only
    ``methods/base.py``, where a method registers itself when its module is imported."""
    modules = {_module_name(p) for p in PACKAGE.rglob("*.py")}
    registry = "moe_roma.methods.registry"
    method_modules = sorted(m for m in modules if m.startswith("moe_roma.methods.") and m != registry)
    imported = {_resolve(t, modules) for t in _imported_names(PACKAGE / "methods" / "registry.py")}
    assert not imported & set(method_modules) - {"moe_roma.methods.base"}, imported
    for name in method_modules:
        path = PACKAGE.joinpath(*name.split(".")[1:]).with_suffix(".py")
        if not path.is_file():
            path = path.with_suffix("") / "__init__.py"
        assert registry not in {_resolve(t, modules) for t in _imported_names(path)}, (
            f"{name} imports the registry"
        )


# Import names whose distribution is not installed here, so metadata cannot name it.
_OPTIONAL_DISTRIBUTIONS = {"umap": "umap-learn"}


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def imported_packages() -> dict[str, str]:
    """Every third-party top-level module ``moe_roma`` imports (lazily too) -> its distribution name."""
    installed = packages_distributions()
    out = {}
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for top in {n.split(".")[0] for n in names} - set(sys.stdlib_module_names) - {"moe_roma"}:
                dist = installed.get(top, [_OPTIONAL_DISTRIBUTIONS.get(top, top)])[0]
                out[top] = _normalise(dist)
    return out


@pytest.mark.skipif(sys.version_info < (3, 11), reason="tomllib is new in Python 3.11")
def test_every_imported_package_is_declared():
    """A package pulled in only by another one's requirements can vanish with that one's next release."""
    import tomllib

    project = tomllib.loads((PACKAGE.parents[1] / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    requirements = project["dependencies"] + [
        r for extra in project["optional-dependencies"].values() for r in extra
    ]
    declared = {_normalise(re.match(r"[A-Za-z0-9_.-]+", r).group()) for r in requirements}
    missing = {module: dist for module, dist in imported_packages().items() if dist not in declared}
    assert not missing, f"imported but not declared in pyproject.toml: {missing}"
