"""The layer rule of docs/engine.md, checked on the source: `nodes/` never imports `server/`, and
no two files import each other, directly or around a loop (function-local imports included:
they are how cycles used to hide)."""

from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("nodes", "server")


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for pkg in PACKAGES for p in (REPO / pkg).rglob("*.py")}


def _imports(path: Path, name: str, known: dict[str, Path]) -> set[str]:
    """Project modules a file imports anywhere in it (`from a import b` counts a.b when b is a
    module, else a). A package's parents are not counted: every import starts them."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            for alias in node.names:  # `from pkg import module` depends on the module; a name, on pkg
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base)
    return {m for m in found if m in known and m != name}


def _graph() -> nx.DiGraph:
    known = _modules()
    graph = nx.DiGraph()
    for name, path in known.items():
        graph.add_node(name)
        graph.add_edges_from((name, target) for target in _imports(path, name, known))
    return graph


def test_nodes_never_import_server():
    graph = _graph()
    leaks = [(a, b) for a, b in graph.edges if a.split(".")[0] == "nodes" and b.split(".")[0] == "server"]
    assert not leaks, f"nodes/ imports server/: {leaks}"


def test_no_import_cycles_between_files():
    cycles = [sorted(c) for c in nx.strongly_connected_components(_graph()) if len(c) > 1]
    assert not cycles, f"files that import each other (directly or around a loop): {cycles}"


def test_the_checker_sees_imports_inside_functions(tmp_path):
    """A function-local import is an import: the check must not be fooled by one."""
    source = tmp_path / "m.py"
    source.write_text("def f():\n    from server import models\n    import nodes.base\n")
    known = {"server": Path(), "server.models": Path(), "nodes.base": Path()}
    assert _imports(source, "nodes.m", known) == {"server.models", "nodes.base"}
