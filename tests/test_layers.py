"""The packages form layers, and their imports say so: ``views`` < ``ingest`` < ``api`` <
``benchmarks``. A module imports only from its own layer or below, module-level imports form no
cycle, and no product package imports ``tests`` (an installed command has no ``tests/``).

The one exception is ``tallyd bench``: ``api`` imports ``benchmarks`` inside the function that runs
it, so serving never loads the load generator (or needs its extras).

Modules are found by walking the directories, so a new module is checked the day it is added."""

from __future__ import annotations

import ast
import functools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LAYERS = ("views", "ingest", "api", "benchmarks")
LAZY_ALLOWED = {("api", "benchmarks")}  # the bench subcommand, imported when it runs


@dataclass(frozen=True)
class Import:
    source: str  # the importing module, dotted
    target: str  # the imported project module, dotted (a package stands for its __init__)
    line: int
    lazy: bool  # inside a function: runs when called, not when the module is imported
    typing_only: bool  # under ``if TYPE_CHECKING:``: never runs


@functools.cache
def modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for package in (*LAYERS, "tests"):
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(parts)] = path
    return found


Found = tuple[ast.Import | ast.ImportFrom, bool, bool]


def _nodes(tree: ast.AST) -> Iterator[Found]:
    """Every import statement, with whether it sits in a function and under TYPE_CHECKING."""

    def walk(node: ast.AST, lazy: bool, typing_only: bool) -> Iterator[Found]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import | ast.ImportFrom):
                yield child, lazy, typing_only
            elif isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
                yield from walk(child, True, typing_only)
            elif isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                for stmt in child.body:
                    yield from walk(ast.Module(body=[stmt], type_ignores=[]), lazy, True)
                for stmt in child.orelse:
                    yield from walk(ast.Module(body=[stmt], type_ignores=[]), lazy, typing_only)
            else:
                yield from walk(child, lazy, typing_only)

    yield from walk(tree, False, False)


def _targets(node: ast.Import | ast.ImportFrom, module: str, is_package: bool) -> list[str]:
    """Dotted names a statement may load: the module and each package above it."""
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    else:
        base = node.module or ""
        if node.level:
            here = module.split(".") if is_package else module.split(".")[:-1]
            here = here[: len(here) - (node.level - 1)]
            base = ".".join([*here, base] if base else here)
        names = [f"{base}.{alias.name}" for alias in node.names] + [base]
    loaded: set[str] = set()
    for name in names:
        parts = name.split(".")
        loaded.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
    return sorted(loaded)


@functools.cache
def imports() -> list[Import]:
    known = modules()
    out = []
    for module, path in known.items():
        tree = ast.parse(path.read_text(), str(path))
        is_package = path.name == "__init__.py"
        for node, lazy, typing_only in _nodes(tree):
            for target in _targets(node, module, is_package):
                # A module's own ancestor packages are loaded before it runs (Python imports
                # ``a`` and ``a.b`` before ``a.b.c``): naming one is never a new edge.
                if target in known and target != module and not module.startswith(target + "."):
                    out.append(Import(module, target, node.lineno, lazy, typing_only))
    return out


def _package(module: str) -> str:
    return module.split(".")[0]


def _where(edge: Import) -> str:
    return f"{modules()[edge.source].relative_to(ROOT)}:{edge.line}"


def test_every_package_is_found() -> None:
    found = {_package(m) for m in modules()}
    assert found == {*LAYERS, "tests"}
    # A sanity check of the walker itself: api's command line imports views.
    assert any(e.source == "api.cli" and _package(e.target) == "views" for e in imports())


def test_no_package_imports_from_a_layer_above_it() -> None:
    wrong = set()
    for edge in imports():
        source, target = _package(edge.source), _package(edge.target)
        if source == "tests" or target == "tests":
            continue
        if LAYERS.index(target) <= LAYERS.index(source):
            continue
        if edge.lazy and (source, target) in LAZY_ALLOWED:
            continue
        wrong.add(_where(edge))
    assert not wrong, "imports from a higher layer:\n" + "\n".join(sorted(wrong))


def test_lazy_imports_of_benchmarks_stay_in_functions() -> None:
    """``api`` may run ``benchmarks`` (tallyd bench) but never load it when imported."""
    eager = {
        _where(e)
        for e in imports()
        if (_package(e.source), _package(e.target)) in LAZY_ALLOWED and not e.lazy
    }
    assert not eager, "module-level imports of benchmarks in api:\n" + "\n".join(sorted(eager))


def test_no_product_module_imports_tests() -> None:
    wrong = {
        _where(e)
        for e in imports()
        if _package(e.source) in LAYERS and _package(e.target) == "tests"
    }
    assert not wrong, "an installed command has no tests/ to import:\n" + "\n".join(sorted(wrong))


def _cycle(edges: list[Import]) -> list[str] | None:
    """One cycle of the graph, as the modules along it, or None."""
    graph: dict[str, list[str]] = {}
    for edge in edges:
        graph.setdefault(edge.source, []).append(edge.target)
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in graph.get(node, []):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def _product(edge: Import) -> bool:
    return _package(edge.source) in LAYERS and _package(edge.target) in LAYERS


def test_module_level_imports_form_no_cycle() -> None:
    edges = [e for e in imports() if _product(e) and not e.lazy and not e.typing_only]
    cycle = _cycle(edges)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_lazy_imports_hide_no_cycle() -> None:
    """An import moved into a function to break a cycle leaves the cycle in the design. The bench
    subcommand's lazy import counts too: what ``benchmarks`` loads never leads back to it."""
    edges = [e for e in imports() if _product(e) and not e.typing_only]
    cycle = _cycle(edges)
    assert cycle is None, "import cycle through a lazy import: " + " -> ".join(cycle or [])


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("import a.b.c\n", ["a", "a.b", "a.b.c"]),
        ("from a.b import c\n", ["a", "a.b", "a.b.c"]),
        ("def f():\n    from . import x\n", ["p", "p.x"]),
        ("from .y import z\n", ["p", "p.y", "p.y.z"]),
    ],
)
def test_the_walker_resolves_imports(source: str, expected: list[str]) -> None:
    names = []
    for node, _, _ in _nodes(ast.parse(source)):
        names += _targets(node, "p.m", is_package=False)
    assert sorted(set(names)) == expected


def test_the_walker_tells_lazy_and_typing_only_imports() -> None:
    source = (
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    import t\n"
        "def f():\n    import lazy\n"
        "import eager\n"
    )
    found = {
        _targets(node, "m", False)[-1]: (lazy, typing_only)
        for node, lazy, typing_only in _nodes(ast.parse(source))
    }
    assert found["t"] == (False, True)
    assert found["lazy"] == (True, False)
    assert found["eager"] == (False, False)
