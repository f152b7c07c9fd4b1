"""The package's shape: no import circle, `search` below `report`, a docstring on every public name."""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "flipsearch"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PKG.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PKG.rglob("*.py"))}


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The flipsearch modules `name` imports anywhere in its text (inside functions too: a
    deferred import is still a dependency). A package's own `__init__` is a dependency of its
    submodule only when the submodule imports a name defined there (`from . import
    __version__`); that importing a submodule runs its package is Python's order, not the code's."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            targets = [f"{base}.{a.name}" for a in node.names] + [base]
        else:
            continue
        for i, t in enumerate(targets):
            named = isinstance(node, ast.ImportFrom) and i < len(node.names)  # a name, not the bare `base`
            # the longest known module the import names (`from .x import f` -> x; `from . import x` -> x)
            while t and t not in known:
                t = t.rpartition(".")[0]
            ancestor = name.startswith(t + ".")
            if t and t != name and (not ancestor or (named and t == base)):
                out.add(t)
    return out


def import_graph() -> dict[str, set[str]]:
    mods = _modules()
    return {name: _imports(name, path, set(mods)) for name, path in mods.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_walker_sees_a_circle_when_there_is_one():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_circle_in_the_package():
    graph = import_graph()
    assert len(graph) > 50 and graph["flipsearch.report.build"]        # the walk found the package
    assert _cycles(graph) == []


def test_search_does_not_import_report():
    graph = import_graph()
    bad = {m: sorted(t for t in ts if t.startswith("flipsearch.report"))
           for m, ts in graph.items() if m.startswith("flipsearch.search")}
    assert {m: ts for m, ts in bad.items() if ts} == {}


def missing_docstrings() -> list[str]:
    """Public top-level functions and classes (and public methods of public classes) of
    the package without a docstring."""
    out = []
    for name, path in _modules().items():
        if any(part.startswith("_") and part != "__init__" for part in path.relative_to(PKG).with_suffix("").parts):
            continue                                            # a private module: its names are not public
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and not node.name.startswith("_"):
                if ast.get_docstring(node) is None:
                    out.append(f"{name}.{node.name}")
    return out


def test_every_public_name_has_a_docstring():
    assert missing_docstrings() == []


def test_each_package_says_what_it_exports():
    import importlib

    for name, path in _modules().items():
        if path.name != "__init__.py":
            continue
        pkg = importlib.import_module(name)
        assert pkg.__doc__ and isinstance(getattr(pkg, "__all__", None), list), name
        for public in pkg.__all__:
            assert getattr(pkg, public) is not None, f"{name}.{public}"
