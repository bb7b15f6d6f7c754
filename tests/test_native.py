"""The compiler modules built as C extensions (compiler/native.py): that this install runs them,
that the pure-Python sources they come from still pass the compiler's own tests (the fallback
where no C compiler is at hand), and that extensions built from other sources are refused."""
from __future__ import annotations

import importlib
import json
import os
import shutil
import subprocess
import sys
from importlib.machinery import EXTENSION_SUFFIXES
from pathlib import Path

from compiler import native
from tests.conftest import ROOT

# The compiler's tests whose results depend on the compiled modules: the golden files compare
# every feature's output byte for byte; every analyzer's cases and the corpus, every finding.
COMPILER_TESTS = ["tests/test_golden.py", "tests/test_incremental.py", "tests/test_endpoints.py",
                  "tests/test_clusters.py", "tests/test_routes.py", "tests/test_listeners.py", "tests/test_xds.py",
                  "tests/test_analyzers.py", "tests/test_corpus.py"]


def test_every_native_module_runs_compiled_unless_installed_pure():
    for module in native.NATIVE:
        importlib.import_module(module)
    if os.environ.get("GALLEON_PURE_PYTHON") == "1":  # as the install was asked to
        assert native.compiled() == []
        return
    assert native.compiled() == list(native.NATIVE), (
        "some compiler modules run as pure Python: the install did not build them (see its output), "
        "or they were added to compiler/native.py since: run `make build`")


def test_pure_python_sources_pass_the_compiler_tests(tmp_path):
    pure = tmp_path / "compiler"
    shutil.copytree(ROOT / "compiler", pure, ignore=shutil.ignore_patterns("*.so", "__pycache__", native.RECORD))
    # The copy first on the path: -P keeps Python from putting the working directory (the checkout)
    # before it, and append mode keeps pytest from doing so.
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    probe = subprocess.run([sys.executable, "-P", "-c", "import compiler, compiler.xds; from compiler import native; "
                            "print(compiler.__file__, native.compiled())"],
                           cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    assert probe.stdout.split() == [str(pure / "__init__.py"), "[]"]
    run = subprocess.run([sys.executable, "-P", "-m", "pytest", "-q", "-p", "no:cacheprovider", "--import-mode=append",
                          *COMPILER_TESTS], cwd=ROOT, env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert " passed" in run.stdout.splitlines()[-1]


def _fake_build(root: Path, modules: list[str]) -> None:
    for module in modules:
        native.source_path(module, root).with_suffix(EXTENSION_SUFFIXES[0]).write_bytes(b"")
    (root / native.RECORD).write_text(json.dumps(native.source_hashes(root)))


def test_an_edited_source_makes_its_extension_stale(tmp_path):
    shutil.copytree(ROOT / "compiler", tmp_path, dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns("*.so", "__pycache__", native.RECORD))
    assert native.built(tmp_path) == [] and native.stale(tmp_path) == []
    _fake_build(tmp_path, ["compiler.endpoints", "compiler.routes"])
    assert native.built(tmp_path) == ["compiler.endpoints", "compiler.routes"]
    assert native.stale(tmp_path) == []
    source = native.source_path("compiler.routes", tmp_path)
    source.write_text(source.read_text() + "\n# edited\n")
    assert native.stale(tmp_path) == ["compiler.routes"]
    (tmp_path / native.RECORD).unlink()
    assert native.stale(tmp_path) == ["compiler.endpoints", "compiler.routes"]

