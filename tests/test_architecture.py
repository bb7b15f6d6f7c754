"""Rules of the code's layout that ARCHITECTURE.md states, checked on the source itself."""
from __future__ import annotations

import ast
from pathlib import Path

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


def imported_names(path: Path) -> set[str]:
    """Every module name an import statement of the file names (anywhere in it), made absolute."""
    module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
    package = module.split(".")[:-1]
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = ".".join(package[:len(package) - node.level + 1] + ([node.module] if node.module else [])) \
                if node.level else node.module or ""
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def test_the_compiler_imports_nothing_of_the_reconciler():
    offenders = {name for name, path in modules().items() if name.startswith("compiler")
                 and any(n == "reconciler" or n.startswith("reconciler.") for n in imported_names(path))}
    assert offenders == set()


def test_the_garbage_collector_is_switched_in_one_module():
    """reconciler/runtime.py sets the process's collector policy at its entry; nothing else touches it
    (a thread turning it off and on again would do so under the daemon's other threads)."""
    users = {name for name, path in modules().items() if "gc" in imported_names(path)}
    assert users == {"reconciler.runtime"}
