"""Rules of the code's layout that ARCHITECTURE.md states, checked on the source itself."""
from __future__ import annotations

import ast
from pathlib import Path
from typing import Collection, Iterator

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("compiler", "reconciler")
GENERATED = ("_pb2.py", "_pb2_grpc.py")


def modules() -> dict[str, Path]:
    """Dotted module name -> file, for every hand-written module of compiler/ and reconciler/."""
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            if path.name.endswith(GENERATED):
                continue
            parts = path.relative_to(ROOT).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def import_statements(path: Path) -> Iterator[tuple[str, list[str]]]:
    """Every import statement of the file (anywhere in it: functions, TYPE_CHECKING blocks), as the
    absolute name it imports from and the names it takes: ``import a.b`` is ("a.b", []),
    ``from .x import y`` in package p is ("p.x", ["y"])."""
    module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
    package = module.split(".")[:-1]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            yield from ((alias.name, []) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = ".".join(package[:len(package) - node.level + 1] + ([node.module] if node.module else [])) \
                if node.level else node.module or ""
            yield base, [alias.name for alias in node.names]


def imported_names(path: Path) -> set[str]:
    """Every module name an import statement of the file names (anywhere in it), made absolute."""
    names = set()
    for base, taken in import_statements(path):
        names.add(base)
        names.update(f"{base}.{name}" for name in taken)
    return names


def imported_modules(path: Path, known: Collection[str]) -> set[str]:
    """The modules of ``known`` that the file's import statements import: ``from p import m`` imports
    the module p.m when there is one, else p (for a name p defines)."""
    found = set()
    for base, taken in import_statements(path):
        found.update(f"{base}.{name}" if f"{base}.{name}" in known else base for name in taken or [None])
    return found & set(known)


def strongly_connected(graph: dict[str, set[str]]) -> list[set[str]]:
    """The strongly connected components of ``graph`` (node -> the nodes it points to) that hold a
    cycle: more than one node (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    components = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for other in graph[node]:
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                component.add(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(component)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return components


def test_the_compiler_imports_nothing_of_the_reconciler():
    offenders = {name for name, path in modules().items() if name.startswith("compiler")
                 and any(n == "reconciler" or n.startswith("reconciler.") for n in imported_names(path))}
    assert offenders == set()


def test_the_garbage_collector_is_switched_in_one_module():
    """reconciler/runtime.py sets the process's collector policy at its entry; nothing else touches it
    (a thread turning it off and on again would do so under the daemon's other threads)."""
    users = {name for name, path in modules().items() if "gc" in imported_names(path)}
    assert users == {"reconciler.runtime"}


def test_no_import_cycles():
    """No module of compiler/ or reconciler/ imports, directly or through others, a module that
    imports it back; every import statement counts, those in functions and TYPE_CHECKING blocks
    too. (A package's own ``__init__``, which Python runs before any of its modules, is not counted
    as imported by its modules' imports of one another.)"""
    found = modules()
    graph = {name: imported_modules(path, found) - {name} for name, path in found.items()}
    assert strongly_connected(graph) == []


def test_the_cycle_check_finds_cycles():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a", "e"}, "e": {"d"}, "f": set(), "g": {"g"}}
    assert sorted(map(sorted, strongly_connected(graph))) == [["a", "b", "c"], ["d", "e"]]
