"""Which compiler modules are built as C extensions, and a check that the built ones are current.

Installing the package (``pip install .``, ``make``) compiles the modules in NATIVE with mypyc
(see setup.py): the same source, type-checked and translated to C, compiles a large view in
about a third less time. Their .py files stay the reference and are shipped too, so a machine
without a C compiler, or GALLEON_PURE_PYTHON=1 at install, runs the pure-Python package.

Python imports an extension module in preference to its .py, so in a checkout where a source
was edited after the build the old code would run. setup.py records each compiled source's hash
in RECORD; ``check`` refuses to import a package whose extensions do not match it.

Plain standard library and no package imports: setup.py runs this file before the package can
be imported.
"""
from __future__ import annotations

import hashlib
import json
import sys
from importlib.machinery import EXTENSION_SUFFIXES
from pathlib import Path

NATIVE = (
    "compiler.cache",
    "compiler.clusters",
    "compiler.durations",
    "compiler.endpoints",
    "compiler.fastschema",
    "compiler.fingerprints",
    "compiler.gateways",
    "compiler.hosts",
    "compiler.listeners",
    "compiler.locality",
    "compiler.model",
    "compiler.names",
    "compiler.protos",
    "compiler.provenance",
    "compiler.routes",
    "compiler.scope",
    "compiler.view",
    "compiler.wire",
    "compiler.xds",
    # Validation: a repository's every object is checked by some sixty analyzers on each revision.
    "compiler.validate.deprecation",
    "compiler.validate.destination_rules",
    "compiler.validate.framework",
    "compiler.validate.references",
    "compiler.validate.routing",
    "compiler.validate.service_entries",
    "compiler.validate.syntax",
    "compiler.validate.topology",
    "compiler.validate.workloads",
)
RECORD = "native_build.json"
PACKAGE_DIR = Path(__file__).resolve().parent


class StaleBuildError(ImportError):
    pass


def source_path(module: str, root: Path = PACKAGE_DIR) -> Path:
    return root.joinpath(*module.split(".")[1:]).with_suffix(".py")


def source_hashes(root: Path = PACKAGE_DIR) -> dict[str, str]:
    return {module: hashlib.sha256(source_path(module, root).read_bytes()).hexdigest() for module in NATIVE}


def built(root: Path = PACKAGE_DIR) -> list[str]:
    """The modules of NATIVE that have an extension file beside their source."""
    return [module for module in NATIVE
            if any(source_path(module, root).with_suffix(suffix).exists() for suffix in EXTENSION_SUFFIXES)]


def stale(root: Path = PACKAGE_DIR) -> list[str]:
    """The built modules whose source differs from the one they were built from."""
    modules = built(root)
    if not modules:
        return []
    try:
        recorded = json.loads((root / RECORD).read_text())
    except (OSError, ValueError):
        return modules
    current = source_hashes(root)
    return [module for module in modules if recorded.get(module) != current[module]]


def check() -> None:
    changed = stale()
    if changed:
        files = ", ".join(str(source_path(m).relative_to(PACKAGE_DIR.parent)) for m in changed)
        raise StaleBuildError(
            f"galleon: the compiled modules of {files} were built from other sources than the ones beside "
            f"them, so Python would run the old code. Rebuild them with `make build` (or `pip install -e .`), "
            f"or delete the .so files beside them to run the pure-Python sources.")


def compiled() -> list[str]:
    """The modules of NATIVE that this process runs as C extensions."""
    return [module for module in NATIVE if module in sys.modules
            and str(getattr(sys.modules[module], "__file__", "")).endswith(tuple(EXTENSION_SUFFIXES))]
